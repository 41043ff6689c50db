"""Sequence log-probabilities shared by every family whose responses are token sequences (char LM, HF causal LM).

A response's log-probability is built from per-token log-probs and a completion mask, the same way for every such
family: the fp32 sum over completion tokens (prompt and padding masked, as TRL), their mean for objectives defined on
it (SimPO, ORPO), or LD-DPO's split (the tokens both responses of a pair share in length counted in full, the longer
response's tail down-weighted by ``ld_alpha``). Token counts travel with the log-probs, so objectives that normalise a
log-ratio per token (IPO and ``sigmoid_norm`` in TRL) can do so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gather_token_logps(logits: Tensor, targets: Tensor, with_dist: bool = False) -> tuple[Tensor, Tensor | None]:
    """(log-prob of each target ``[N, T]``, full log-softmax ``[N, T, V]`` or None), fp32, for logits ``[N, T, V]``
    that already predict ``targets`` position by position. Without ``with_dist`` the fused cross-entropy kernel is
    used and no ``[N, T, V]`` distribution is kept."""
    logits = logits.float()
    if not with_dist:
        return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"), None
    dist = F.log_softmax(logits, dim=-1)
    return dist.gather(-1, targets.unsqueeze(-1)).squeeze(-1), dist


def wpo_token_logweights(tokens: Tensor, dist: Tensor) -> Tensor:
    """WPO's per-token log weight log p(y_t) − log Σ_v p(v)² (arXiv:2406.11827, sampled alignment)."""
    return tokens - torch.logsumexp(2 * dist, dim=-1)


def shared_lengths(mask: Tensor, n_pairs: int | None) -> Tensor | None:
    """Per row of ``mask [N, T]`` laid out as ``[chosen; rejected]`` (``N = 2 * n_pairs``): the shorter completion
    length of its pair (LD-DPO's shared part); None for unpaired rows."""
    if n_pairs is None:
        return None
    lengths = mask.sum(-1)
    shared = torch.minimum(lengths[:n_pairs], lengths[n_pairs:])
    return torch.cat([shared, shared])


def split_sums(tokens: Tensor, mask: Tensor, shared: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sum over the first ``shared`` completion tokens, sum over the rest) per row, fp32 (TRL's ``comp_pos`` split:
    completion positions are counted along the mask, so right padding and a prompt of any length are handled)."""
    values = tokens.float() * mask
    if shared is None:
        return values.sum(-1), torch.zeros_like(values[:, 0])
    position = mask.long().cumsum(-1)
    head = position <= shared.unsqueeze(-1)
    return (values * head).sum(-1), (values * ~head).sum(-1)


def reduce_sequences(
    head: Tensor, tail: Tensor, lengths: Tensor, length_normalized: bool = False, ld_alpha: float | None = None
) -> Tensor:
    """A response's log-prob from its split sums: the sum (``head + tail``), the mean token log-prob
    (``length_normalized``), or LD-DPO's ``head + ld_alpha * tail``."""
    if ld_alpha is not None:
        return head + ld_alpha * tail
    total = head + tail
    return total / lengths.clamp(min=1) if length_normalized else total


__all__ = ["gather_token_logps", "wpo_token_logweights", "shared_lengths", "split_sums", "reduce_sequences"]
