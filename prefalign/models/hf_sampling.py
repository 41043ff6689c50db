"""Seeded fixed-length sampling from a Hugging Face causal LM, for mining preference pairs and judging samples."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


@torch.no_grad()
def sample_continuations(model: Any, prompts: Tensor, new_tokens: int, samples: int, seed: int) -> Tensor:
    """``samples`` continuations of exactly ``new_tokens`` tokens per prompt (``prompts [N, P]``, no padding), drawn
    with ``model.generate`` from the model's own distribution (temperature 1, no top-k or top-p: what a preference
    pair or a valid-word rate is about). Seeded in a forked RNG, so sampling never shifts a training run's random
    stream. ``model`` is a transformers model or an :class:`~prefalign.models.HFCausalLM` (its ``.model``).
    Returns ``[N * samples, new_tokens]``; a prompt's samples are consecutive rows."""
    inner = getattr(model, "model", model)
    was_training = inner.training
    inner.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = inner.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # EOS suppressed: every sample is judged at the same length
                num_return_sequences=samples,
                pad_token_id=inner.config.eos_token_id,
            )
    finally:
        inner.train(was_training)
    return out[:, prompts.shape[1] :]


__all__ = ["sample_continuations"]
