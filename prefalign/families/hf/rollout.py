"""Sampling completions from a Hugging Face causal LM for online RL, as TRL 1.16's ``GRPOTrainer`` samples them.

Prompts arrive left-padded (``prompt_ids``/``prompt_mask`` from :class:`~prefalign.data.hf.TRLPromptDataModule`);
each is repeated ``k`` times in a row (TRL's ``RepeatSampler`` layout: a prompt's group is contiguous), and
``transformers``' ``generate`` continues all of them at once with its KV cache. A completion ends at its first stop
token (TRL's ``eos_token_ids``: the tokenizer's EOS and every EOS id of the model's generation config); the stop token
is part of the completion, everything after it is masked and set to the pad id (``generate`` pads finished rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """TRL's ``eos_token_ids``: the model's generation-config EOS ids, with the tokenizer's EOS first if missing."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return ids


def mask_after_stop(completion_ids: Tensor, stop_ids: list[int]) -> Tensor:
    """``[N, C]`` bool: True up to and including each row's first stop token (all True for a row without one)."""
    is_stop = torch.isin(completion_ids, torch.tensor(stop_ids, device=completion_ids.device))
    first = torch.where(is_stop.any(-1), is_stop.int().argmax(-1), completion_ids.shape[1])
    return torch.arange(completion_ids.shape[1], device=completion_ids.device) <= first.unsqueeze(1)


def completion_metrics(
    completion_ids: Tensor, mask: Tensor, stop_and_pad: list[int]
) -> tuple[dict[str, Tensor], Tensor]:
    """(TRL's ``completions/*`` metrics, ``[N]`` bool truncated): a completion is truncated when its last token is
    neither a stop token nor the pad token (it hit ``max_new_tokens``)."""
    lengths = mask.sum(-1)
    last = completion_ids.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    truncated = ~torch.isin(last, torch.tensor(stop_and_pad, device=last.device))
    done = lengths[~truncated].float()
    done = done if len(done) else torch.zeros(1, device=lengths.device)  # TRL's edge case: no terminated completion
    f = lengths.float()
    metrics = {
        "completions/mean_length": f.mean(),
        "completions/min_length": f.min(),
        "completions/max_length": f.max(),
        "completions/clipped_ratio": truncated.float().mean(),
        "completions/mean_terminated_length": done.mean(),
        "completions/min_terminated_length": done.min(),
        "completions/max_terminated_length": done.max(),
    }
    return metrics, truncated


@dataclass
class SamplingSettings:
    """What ``generate`` is asked for (TRL's ``GRPOConfig`` names in brackets)."""

    max_new_tokens: int = 512  # max_completion_length
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # TRL's top_k=0: no top-k filtering
    min_p: float | None = None
    repetition_penalty: float = 1.0
    generation_kwargs: dict[str, Any] = field(default_factory=dict)

    def generation_config(self, tokenizer: Any, stop_ids: list[int]) -> Any:
        from transformers import GenerationConfig

        kwargs = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": stop_ids,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or 0,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            **self.generation_kwargs,
        }
        return GenerationConfig(**kwargs, disable_compile=True)


@torch.no_grad()
def sample_completions(
    model: Any, prompt_ids: Tensor, prompt_mask: Tensor, generation_config: Any, stop_ids: list[int], pad_id: int
) -> tuple[Tensor, Tensor]:
    """(completion ids ``[N, C]``, mask ``[N, C]`` bool) for left-padded prompts ``[N, P]`` already repeated k times.

    ``model`` is an :class:`~prefalign.models.HFCausalLM` (its ``generate``: eval mode, KV cache). ``C`` is the longest
    completion of the batch (``generate`` stops when every row has stopped); tokens after a row's stop are pad ids."""
    out = model.generate(prompt_ids, prompt_mask, generation_config)
    completions = out[:, prompt_ids.shape[1] :]
    mask = mask_after_stop(completions, stop_ids)
    return completions.masked_fill(~mask, pad_id), mask


__all__ = ["stop_token_ids", "mask_after_stop", "completion_metrics", "SamplingSettings", "sample_completions"]
