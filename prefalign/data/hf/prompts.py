"""TRLPromptDataModule: prompt-only data in TRL's GRPO formats, for online RL (PPO-lite / GRPO) on Hugging Face models."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from prefalign.data.batches import AssembledBatches, TensorBatches
from prefalign.data.hf.formats import check_chat_template, check_prompt_columns, check_split, load_any, tokenize_prompts

# Columns a reward function never receives as keyword arguments: the prompt and the completions are passed by name
# (TRL's _calculate_rewards drops the same three).
NOT_REWARD_KWARGS = ("prompt", "completion", "completion_ids")


def left_pad(rows: list[list[int]], value: int) -> tuple[Tensor, Tensor]:
    """(``[N, P]`` ids left-padded with ``value``, ``[N]`` lengths): generation continues every row at the same column."""
    width = max(max((len(r) for r in rows), default=1), 1)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):  # once per dataset, at setup (not in the training step)
        if r:
            out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
    return out, torch.tensor([len(r) for r in rows], dtype=torch.long)


class PromptBatches(AssembledBatches):
    """Batches of left-padded prompts: ``prompt_ids`` and ``prompt_mask`` ``[B, P]`` (trimmed to the batch's longest
    prompt) and ``row`` ``[B]``, the rows' indices in the data module's table (what reward functions read their
    columns from). Rows come from :class:`TensorBatches` (seeded shuffling, DDP shards, resumable)."""

    def __init__(self, tensors: dict[str, Tensor], **kwargs: Any) -> None:
        self.rows = TensorBatches(tensors, **kwargs)

    def assemble(self, b: dict[str, Tensor]) -> dict[str, Tensor]:
        width = int(b["prompt_length"].max())
        ids = b["prompt_ids"][:, b["prompt_ids"].shape[1] - width :]
        mask = (torch.arange(width) >= width - b["prompt_length"].unsqueeze(1)).long()
        return {"prompt_ids": ids, "prompt_mask": mask, "row": b["row"]}


class TRLPromptDataModule(L.LightningDataModule):
    """Prompt-only data in TRL's formats (``pip install -e ".[hf]"``), for PPO-lite (GRPO) with
    :class:`~prefalign.families.hf.HFCausalLMFamily`.

    Formats (TRL's prompt-only): *standard* ``{"prompt": "text"}`` and *conversational* ``{"prompt": [{"role": "user",
    "content": ...}]}``, rendered with the tokenizer's chat template and the generation prompt. Every other column
    (a reference answer, a task id, ...) is kept and handed to the reward functions as a keyword argument, one value
    per completion, as TRL's ``GRPOTrainer`` does. Loaded with ``datasets`` from a local json/jsonl/parquet/csv file,
    a ``save_to_disk`` folder or a hub name (:func:`~prefalign.data.hf.formats.load_any`); tokenized with the
    *model's* tokenizer, which the family hands over before training (:meth:`prepare`), as TRL tokenizes prompts.
    Prompts are not truncated (TRL 1.16 has no prompt length limit).

    Validation: the dataset's own ``val_split`` when it has one, else ``val_fraction`` of the training rows when asked;
    validation samples ``k`` completions per prompt and logs their rewards (``val/reward``, ``val/rewards/...``).

    Args:
        dataset_name: a hub name or a local file/folder (``--dataset_name`` on the command line).
        train_split: the split to train on.
        val_split: the split to validate on, if the dataset has it.
        val_fraction: hold out this fraction of ``train_split`` for validation when there is no ``val_split``.
        batch_size: prompts per training step; each is sampled ``k`` times (TRL's ``per_device_train_batch_size`` counts
            completions: ``batch_size * k`` here).
        eval_batch_size: prompts per validation step (default: ``batch_size``).
        seed: shuffling and ``val_fraction`` seed.
        num_proc: processes for ``datasets.map`` (TRL's ``dataset_num_proc``).
    """

    def __init__(
        self,
        dataset_name: str,
        train_split: str = "train",
        val_split: str | None = "test",
        val_fraction: float | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        seed: int = 42,
        num_proc: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.dataset_name, self.train_split, self.val_split = dataset_name, train_split, val_split
        self.val_fraction, self.seed, self.num_proc = val_fraction, seed, num_proc
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.tokenizer: Any = None
        self.conversational = False
        self.splits: dict[str, dict[str, Tensor]] = {}
        self.table: dict[str, list] = {}  # every split's rows, concatenated: the reward functions' columns

    # ------------------------------------------------------------------ preparation (the family calls it before any work)
    def prepare(self, tokenizer: Any) -> None:
        """Load, check and tokenize the prompts with the model's tokenizer; errors are one line, before training."""
        if self.splits:
            return
        self.tokenizer = tokenizer
        data = load_any(self.dataset_name)
        train = check_split(data, self.dataset_name, self.train_split)
        check_prompt_columns(train.column_names)
        self.conversational = check_chat_template(self.dataset_name, train[0], tokenizer)
        parts = {"train": train}
        if self.val_split is not None and self.val_split in data and self.val_split != self.train_split:
            parts["val"] = data[self.val_split]
        elif self.val_fraction is not None:
            split = train.train_test_split(test_size=self.val_fraction, seed=self.seed)
            parts = {"train": split["train"], "val": split["test"]}
        offset = 0
        for name, part in parts.items():
            part = part.map(
                tokenize_prompts,
                fn_kwargs={"tokenizer": tokenizer, "conversational": self.conversational},
                batched=True,
                num_proc=self.num_proc,
                desc=f"Tokenizing prompts ({name})",
            )
            ids, lengths = left_pad(part["prompt_ids"], tokenizer.pad_token_id)
            self.splits[name] = {
                "prompt_ids": ids,
                "prompt_length": lengths,
                "row": torch.arange(offset, offset + len(part)),
            }
            offset += len(part)
            for column in part.column_names:
                if column != "prompt_ids":
                    self.table.setdefault(column, []).extend(part[column])

    def rows(self, index: list[int]) -> tuple[list[Any], dict[str, list[Any]]]:
        """(the prompts, ``{column: values}`` of every other column) of the given table rows, in order."""
        prompts = [self.table["prompt"][i] for i in index]
        columns = {c: [v[i] for i in index] for c, v in self.table.items() if c not in NOT_REWARD_KWARGS}
        return prompts, columns

    # ------------------------------------------------------------------ Lightning
    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            module = getattr(getattr(self, "trainer", None), "lightning_module", None)
            policy = getattr(module, "policy", None)
            if policy is None or not hasattr(policy, "load_tokenizer"):
                raise ValueError(
                    "TRLPromptDataModule takes its tokenizer from the model: use it with model.backbone prefalign.models.HFCausalLM."
                )
            self.prepare(policy.load_tokenizer())

    def _loader(self, split: str, train: bool) -> PromptBatches:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return PromptBatches(
            self.splits[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> PromptBatches:
        return self._loader("train", True)

    def val_dataloader(self) -> PromptBatches | list:
        return self._loader("val", False) if "val" in self.splits else []

    def test_dataloader(self) -> PromptBatches | list:
        return self.val_dataloader()
