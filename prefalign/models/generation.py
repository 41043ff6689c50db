"""Batched sampling from a decoder (``model(ids [B, T]) -> logits [B, T, V]``): every prompt × sample in one forward per new token."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def sample(
    model: Callable[[Tensor], Tensor],
    prompts: Tensor,
    max_new_tokens: int,
    n_vocab: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue each row of ``prompts [N, P]`` by ``max_new_tokens`` sampled ids; returns ``[N, max_new_tokens]``.

    The context is cropped to the last ``block_size`` ids, so generation may run past the block (the notebook's
    code crashes there). ``temperature`` 0 is greedy. All rows advance together (one forward per token).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be ≥ 1.")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be ≥ 0 (0 = greedy).")
    seq = prompts
    for _ in range(max_new_tokens):
        logits = model(seq[:, -block_size:])[:, -1, :n_vocab].float()
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < n_vocab:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prompts.shape[1] :]
