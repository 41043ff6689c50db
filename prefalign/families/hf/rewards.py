"""Rewards for online RL on Hugging Face models, with TRL 1.16 ``GRPOTrainer``'s conventions (``reward_funcs``).

A reward function is any Python callable ``f(prompts, completions, completion_ids, **columns) -> list[float | None]``:
``prompts`` and ``completions`` hold one entry per completion (a prompt repeated for each of its ``k`` samples), as
text in the standard format and as lists of ``{role, content}`` messages in the conversational one; every other
column of the dataset arrives as a keyword argument with one value per completion. ``None`` means "not applicable":
the value is NaN, left out of that function's mean and of the weighted sum (TRL's ``nansum``); a completion no
function scores gets zero advantage. A reward model is :class:`RewardModel`.

Which code runs is chosen by the config only (an import path or a ``class_path``, trusted as every LightningCLI
``class_path``): nothing read from a data file or a model directory selects code (reward models are loaded with
``trust_remote_code=False``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
from torch import Tensor

from prefalign.models.hf import require, resolve_model_dir
from prefalign.objectives.rewards import RewardFunction


def callable_name(func: Callable) -> str:
    """TRL's ``get_callable_name``: a function's ``__name__`` (through ``functools.partial``), else its class's name."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def nanstd(x: Tensor, dim: int | None = None) -> Tensor:
    """TRL's ``nanstd``: the unbiased std over the non-NaN values (NaN with fewer than two)."""
    mean = x.nanmean() if dim is None else x.nanmean(dim, keepdim=True)
    var = ((x - mean) ** 2).nanmean() if dim is None else ((x - mean) ** 2).nanmean(dim)
    count = (~torch.isnan(x)).sum() if dim is None else (~torch.isnan(x)).sum(dim)
    return (var * torch.where(count > 1, count / (count - 1).clamp(min=1), math.nan)).sqrt()


class RewardModel:
    """A reward model: a local ``save_pretrained`` directory (or a hub name where the hub is reachable) of an
    ``AutoModelForSequenceClassification``, loaded with ``num_labels=1`` and ``trust_remote_code=False`` (a model
    directory never chooses code). Called as a reward function; its score is the first logit of prompt + completion,
    tokenized as TRL's ``GRPOTrainer`` does (text concatenated, or the conversation rendered by the reward model's own
    chat template; right padding, no special tokens added). Its metric name is the directory's last component
    (TRL's). Kept outside every ``nn.Module`` tree: never trained, saved in checkpoints or wrapped by DDP.

    Args:
        model_name_or_path: the reward model's directory or hub name.
        dtype: the weights' dtype.
    """

    def __init__(self, model_name_or_path: str, dtype: str = "float32") -> None:
        transformers = require("transformers", "RewardModel")
        folder = resolve_model_dir(model_name_or_path)
        if folder is None or not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"reward model not found: {model_name_or_path!r} is neither a local save_pretrained directory (with "
                "config.json) nor a hub model reachable from here; set the RewardModel's model_name_or_path."
            )
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=1, dtype=getattr(torch, dtype), trust_remote_code=False
        )
        self.model.eval().requires_grad_(False)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The score is read at the last non-pad token, found through the config's pad id (TRL sets it the same way).
        self.model.config.get_text_config().pad_token_id = self.tokenizer.pad_token_id
        self.__name__ = model_name_or_path.rstrip("/").split("/")[-1]

    def to(self, device: Any) -> RewardModel:
        self.model.to(device)
        return self

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        if prompts and isinstance(prompts[0], list):  # conversational: the whole conversation through the template
            texts = [self.tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
        else:
            texts = [p + c for p, c in zip(prompts, completions)]
        inputs = self.tokenizer(
            text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False
        )
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            scores = self.model(**{k: v.to(device) for k, v in inputs.items()}).logits[:, 0]
        return scores.float().tolist()


class TRLRewards(RewardFunction):
    """PPO-lite's reward from TRL-style reward functions: a weighted sum over ``reward_funcs`` (TRL's ``reward_funcs``
    and ``reward_weights``, ``multi_objective_aggregation="sum_then_normalize"``).

    Reads the prompts and the other columns from :class:`~prefalign.data.hf.TRLPromptDataModule` (by the batch's
    ``row``), decodes the completions with the model's tokenizer (special tokens skipped, TRL's ``batch_decode``) and
    calls every function once per batch. Records TRL's metrics in the rollout: ``rewards/<name>/mean`` and ``/std``
    per function, ``reward`` and ``reward_std`` (the weighted sum's), ``frac_reward_zero_std`` (groups whose k rewards
    are all equal: no learning signal).

    A function with a ``bind_data(datamodule)`` method (:class:`~prefalign.families.hf.ValidWords`) is handed the data
    module before training, once its data is prepared: what it needs of the data beyond the rows (a word list).

    Before training (:meth:`check_config`) each function is called once on the first two prompts with empty
    completions (a policy can sample one: an immediate EOS), so a function that fails, or returns the wrong number of
    values, stops the run with one line before any work.

    Args:
        reward_funcs: a list of callables, each an import path of a function (``my_module.my_reward``) or a
            ``{class_path, init_args}`` of a callable class, such as :class:`RewardModel`.
        reward_weights: one weight per function (default: all 1).
    """

    def __init__(self, reward_funcs: list[Callable], reward_weights: list[float] | None = None) -> None:
        super().__init__()
        # A list only (TRL also takes one callable): jsonargparse writes a list of callables back to config.yaml, not a union.
        funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if not funcs:
            raise ValueError("reward_funcs is empty: name at least one reward function.")
        for f in funcs:
            if not callable(f):
                raise ValueError(
                    f"reward_funcs holds {f!r}, which is not callable: name a function or a callable class."
                )
        if reward_weights is not None and len(reward_weights) != len(funcs):
            raise ValueError(
                f"reward_weights has {len(reward_weights)} values for {len(funcs)} reward functions: give one per function."
            )
        self.funcs = funcs  # a plain list: a reward model's weights never join the policy's module tree
        self.names = [callable_name(f) for f in funcs]
        self.weights = torch.tensor(reward_weights if reward_weights is not None else [1.0] * len(funcs))
        self.data: Any = None
        self.tokenizer: Any = None

    # ------------------------------------------------------------------ before training
    def check_config(self, policy: Any, datamodule: Any) -> None:
        if not hasattr(datamodule, "rows"):
            raise ValueError(
                f"TRLRewards reads prompts and columns from prompt-only data: set data.class_path to "
                f"prefalign.data.hf.TRLPromptDataModule (got {type(datamodule).__name__})."
            )
        if hasattr(datamodule, "prepare") and hasattr(policy, "load_tokenizer"):
            datamodule.prepare(policy.load_tokenizer())
        self.bind_data(datamodule)
        prompts, columns = datamodule.rows(list(range(min(2, len(datamodule.table["prompt"])))))
        empty = (
            [[{"role": "assistant", "content": ""}] for _ in prompts]
            if datamodule.conversational
            else [""] * len(prompts)
        )
        for i, f in enumerate(self.funcs):
            if isinstance(f, RewardModel):
                if datamodule.conversational and not getattr(f.tokenizer, "chat_template", None):
                    raise ValueError(
                        f"reward model {self.names[i]!r} has no chat template, and the data is conversational: use a "
                        "reward model whose tokenizer has one, or standard-format data."
                    )
                continue  # always one score per text; not run here (it can be large)
            self._call(i, prompts, empty, [[] for _ in prompts], columns, preflight=True)

    def bind_data(self, datamodule: Any) -> None:
        for f in self.funcs:
            if hasattr(f, "bind_data"):
                f.bind_data(datamodule)

    def setup(self, module: Any, datamodule: Any) -> None:
        self.data = datamodule
        self.tokenizer = datamodule.tokenizer
        self.bind_data(datamodule)  # again: a run outside the CLI has no check_config

    # ------------------------------------------------------------------ scoring
    def _call(
        self, i: int, prompts: list, completions: list, ids: list, columns: dict, preflight: bool = False
    ) -> Tensor:
        name, n = self.names[i], len(prompts)
        try:
            out = self.funcs[i](prompts=prompts, completions=completions, completion_ids=ids, **columns)
        except Exception as e:
            if not preflight:
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            raise ValueError(
                f"reward function {name!r} failed when called before training with {n} empty completions "
                f"({type(e).__name__}: {first}); it must accept prompts, completions, completion_ids and the dataset's "
                "columns as keyword arguments (**kwargs for the rest)."
            ) from None
        if not isinstance(out, (list, tuple, Tensor)) or len(out) != n:
            got = f"{len(out)} values" if isinstance(out, (list, tuple, Tensor)) else f"a {type(out).__name__}"
            raise ValueError(
                f"reward function {name!r} returned {got} for {n} completions: it must return a list with one float "
                "(or None) per completion, as TRL's reward_funcs."
            )
        return torch.tensor([math.nan if v is None else float(v) for v in out], dtype=torch.float32)

    def forward(self, rollout: Any) -> Tensor:
        b, k, c = rollout.responses.shape
        prompts, columns = self.data.rows(rollout.batch["row"].tolist())
        # TRL's layout: each prompt (and each column value) repeated for its k completions, in a row.
        prompts = [p for p in prompts for _ in range(k)]
        columns = {name: [v for v in values for _ in range(k)] for name, values in columns.items()}
        sampled = rollout.batch.get("completion_mask", rollout.mask).reshape(b * k, c)
        lengths = sampled.sum(-1).tolist()
        ids = [row[:n] for row, n in zip(rollout.responses.reshape(b * k, c).tolist(), lengths)]
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": t}] for t in texts] if self.data.conversational else texts
        device = rollout.responses.device
        for f in self.funcs:
            if isinstance(f, RewardModel):
                f.to(device)
        per_func = torch.stack([self._call(i, prompts, completions, ids, columns) for i in range(len(self.funcs))], 1)
        unscorable = torch.isnan(per_func).all(1)
        rewards = (per_func * self.weights).nansum(1).masked_fill(unscorable, math.nan)
        metrics = {}
        for i, name in enumerate(self.names):
            metrics[f"rewards/{name}/mean"] = per_func[:, i].nanmean()
            metrics[f"rewards/{name}/std"] = nanstd(per_func[:, i])
        group_std = nanstd(rewards.view(b, k), dim=1) if k > 1 else torch.zeros(b)
        metrics |= {
            "reward": rewards.nanmean(),
            "reward_std": nanstd(rewards),
            "frac_reward_zero_std": torch.isclose(group_std, torch.zeros_like(group_std)).float().mean(),
        }
        rollout.metrics.update({key: v.to(device) for key, v in metrics.items()})
        return rewards.view(b, k).to(device)


__all__ = ["TRLRewards", "RewardModel", "callable_name", "nanstd"]
