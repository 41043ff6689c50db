"""TRL's dataset formats, loaded with ``datasets`` and tokenized exactly as TRL 1.16's ``DPOTrainer`` does.

Formats (https://huggingface.co/docs/trl/dataset_formats): *standard* ``{prompt, chosen, rejected}`` strings;
*conversational* (each of them a list of ``{role, content}`` messages, rendered with the tokenizer's chat template);
*implicit prompt* ``{chosen, rejected}`` (the shared start is the prompt, TRL's ``extract_prompt``); *unpaired*
``{prompt, completion, label}`` (KTO/BCO). Tokenization follows ``DPOTrainer._prepare_dataset``
(trl/trainer/dpo_trainer.py): EOS appended as text to standard completions that lack it; the prompt tokenized alone
and prompt + completion tokenized together, the completion taken after their common prefix (so a boundary inside
a token is handled as TRL does); no special tokens beyond what the tokenizer or template adds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMATS = (
    "standard {prompt, chosen, rejected}",
    "implicit prompt {chosen, rejected}",
    "unpaired {prompt, completion, label}",
    "or any of them with lists of {role, content} messages (conversational)",
)
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def load_any(dataset_name: str) -> Any:
    """A ``datasets.DatasetDict`` from a local json/jsonl/parquet/csv file, a local dataset folder or a hub name."""
    from prefalign.models.hf import require

    datasets = require("datasets", "TRLPreferenceDataModule")
    path = Path(dataset_name).expanduser()
    if path.is_file():
        builder = LOCAL_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"dataset file {path} has an unknown extension {path.suffix!r}: use json, jsonl, parquet or csv."
            )
        return datasets.load_dataset(builder, data_files=str(path))
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    if path.exists() or dataset_name.startswith((".", "/", "~")):
        if not path.exists():
            raise FileNotFoundError(
                f"dataset not found: {dataset_name} does not exist; pass --dataset_name FILE_OR_HUB_NAME."
            )
    try:
        return datasets.load_dataset(dataset_name)
    except Exception as e:  # not on the hub, offline, or a folder datasets cannot read
        raise FileNotFoundError(
            f"dataset not found: {dataset_name!r} is neither a local json/jsonl/parquet file nor a dataset "
            f"loadable here ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})."
        ) from None


def detect_format(columns: list[str]) -> str:
    """``paired`` (explicit or implicit prompt) or ``unpaired``; a one-line error naming what is missing otherwise."""
    have = set(columns)
    if {"chosen", "rejected"} <= have:
        return "paired"
    if {"prompt", "completion", "label"} <= have:
        return "unpaired"
    wanted = (
        ["prompt", "chosen", "rejected"]
        if "completion" not in have and "label" not in have
        else ["prompt", "completion", "label"]
    )
    missing = [c for c in wanted if c not in have]
    raise ValueError(
        f"the dataset lacks the column(s) {', '.join(missing)} (it has: {', '.join(sorted(have)) or 'none'}); "
        f"accepted TRL formats: {'; '.join(FORMATS)}."
    )


PROMPT_FORMATS = (
    "standard {prompt} (text)",
    "conversational {prompt: [{role, content}, ...]}; any other column is passed to the reward functions",
)


def check_prompt_columns(columns: list[str]) -> None:
    """Prompt-only data (TRL's GRPO formats) needs a ``prompt`` column; a one-line error naming the formats otherwise."""
    if "prompt" not in columns:
        raise ValueError(
            f"the dataset lacks the column prompt (it has: {', '.join(sorted(columns)) or 'none'}); accepted TRL "
            f"prompt-only formats: {'; '.join(PROMPT_FORMATS)}."
        )


def check_split(data: Any, dataset_name: str, split: str) -> Any:
    """``data[split]``, or a one-line error naming the splits there are; an empty split is refused too."""
    if split not in data:
        raise ValueError(
            f"dataset {dataset_name} has no split {split!r} (it has {', '.join(data)}); set data.init_args.train_split."
        )
    if len(data[split]) == 0:
        raise ValueError(f"dataset {dataset_name} split {split!r} is empty.")
    return data[split]


def check_chat_template(dataset_name: str, example: dict[str, Any], tokenizer: Any) -> bool:
    """Whether the data is conversational; conversational data with a tokenizer without a chat template is refused."""
    conversational = is_conversational(example)
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"dataset {dataset_name} is conversational (lists of {{role, content}} messages) but the model's tokenizer "
            "has no chat template: use a chat model, add a chat_template to its tokenizer_config.json, or use standard-format data."
        )
    return conversational


def tokenize_prompts(batch: dict[str, list], tokenizer: Any, conversational: bool) -> dict[str, list]:
    """``prompt_ids`` for a ``datasets.map(batched=True)`` batch, as TRL 1.16's ``GRPOTrainer._tokenize_prompts``: standard
    prompts through the tokenizer (its special tokens included), conversations through the chat template with the
    generation prompt (and the row's ``tools``/``chat_template_kwargs``)."""
    prompts = batch["prompt"]
    if conversational:
        return {
            "prompt_ids": [_ids(tokenizer, p, True, True, template_kwargs(batch, i)) for i, p in enumerate(prompts)]
        }
    return {"prompt_ids": [list(x) for x in tokenizer(text=list(prompts))["input_ids"]]}


def is_conversational(example: dict[str, Any]) -> bool:
    """TRL's ``is_conversational`` (trl/data_utils.py): a supported key holding a list of ``{role, ...}`` dicts."""
    for key in ("prompt", "chosen", "rejected", "completion", "messages"):
        value = example.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
            return True
    return False


def extract_prompt(example: dict[str, Any]) -> dict[str, Any]:
    """TRL's ``extract_prompt`` (trl/data_utils.py): the longest common start of chosen and rejected (messages or
    characters) is the prompt; for text, a space before the divergence stays with the completions."""
    chosen, rejected = example["chosen"], example["rejected"]
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":  # TRL: remove the space before the completion from the prompt
                idx -= 1
            break
    return {"prompt": chosen[:idx], "chosen": chosen[idx:], "rejected": rejected[idx:]}


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _ids(
    tokenizer: Any,
    value: Any,
    conversational: bool,
    generation_prompt: bool = False,
    template_kwargs: dict | None = None,
) -> list[int]:
    if conversational:
        kwargs = {"add_generation_prompt": True} if generation_prompt else {}
        out = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **(template_kwargs or {}), **kwargs)
        return list(out["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def template_kwargs(batch: dict[str, list], i: int) -> dict:
    """TRL's per-row ``apply_chat_template`` arguments: the row's ``tools`` (a list, or JSON text) and its
    ``chat_template_kwargs``."""
    tools = batch["tools"][i] if "tools" in batch else None
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return {"tools": tools, **((batch["chat_template_kwargs"][i] or {}) if "chat_template_kwargs" in batch else {})}


def tokenize_batch(
    batch: dict[str, list], tokenizer: Any, completions: tuple[str, ...], conversational: bool
) -> dict[str, list]:
    """``prompt_ids`` and ``<completion>_ids`` for a ``datasets.map(batched=True)`` batch, as TRL's ``tokenize_fn``.

    Standard text is tokenized in one batched call per field (the fast tokenizer's batch path gives the ids a
    per-example call gives); conversations go through the chat template one by one, as ``apply_chat_template`` does."""
    prompts = batch["prompt"]
    if conversational:
        kw = [template_kwargs(batch, i) for i in range(len(prompts))]
        prompt_ids = [_ids(tokenizer, p, True, True, kw[i]) for i, p in enumerate(prompts)]
        full = {
            c: [_ids(tokenizer, p + r, True, False, kw[i]) for i, (p, r) in enumerate(zip(prompts, batch[c]))]
            for c in completions
        }
    else:
        prompt_ids = [list(x) for x in tokenizer(text=list(prompts))["input_ids"]]
        full = {
            c: [list(x) for x in tokenizer(text=[p + r for p, r in zip(prompts, batch[c])])["input_ids"]]
            for c in completions
        }
    out: dict[str, list] = {"prompt_ids": [], **{f"{c}_ids": [] for c in completions}}
    for i, p in enumerate(prompt_ids):
        # The completion starts where the prompt alone and prompt + completion diverge (TRL: common_prefix_length).
        n = min(common_prefix_length(p, full[c][i]) for c in completions)
        out["prompt_ids"].append(p[:n])
        for c in completions:
            out[f"{c}_ids"].append(full[c][i][n:])
    return out


def add_eos(batch: dict[str, list], eos: str, completions: tuple[str, ...]) -> dict[str, list]:
    """TRL appends the EOS token *as text* to standard-format completions that do not already end with it."""
    return {c: [x if x.endswith(eos) else x + eos for x in batch[c]] for c in completions}


__all__ = [
    "FORMATS",
    "PROMPT_FORMATS",
    "load_any",
    "detect_format",
    "check_prompt_columns",
    "check_split",
    "check_chat_template",
    "tokenize_prompts",
    "is_conversational",
    "extract_prompt",
    "common_prefix_length",
    "tokenize_batch",
    "add_eos",
]
