"""Log-probabilities of response tokens given a prompt, for a decoder over a (sliced) character vocabulary."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from prefalign.families.sequences import gather_token_logps, wpo_token_logweights


def token_log_probs(
    model: Callable[[Tensor], Tensor], prompts: Tensor, responses: Tensor, n_vocab: int, with_dist: bool = True
) -> tuple[Tensor, Tensor | None]:
    """(log-prob of each response token ``[N, R]``, full log-softmax at each response position ``[N, R, V]``), fp32.

    One forward over ``prompt + response`` without its last token: position ``P - 1 + j`` predicts response token
    ``j``. Logits are sliced to the ``n_vocab`` real characters (the model may have spare embedding rows). Without
    ``with_dist`` the token log-probs come from the fused cross-entropy kernel and the distribution is None (what
    pretraining needs: no KL, no WPO weights).
    """
    P = prompts.shape[1]
    seq = torch.cat([prompts, responses], dim=1)
    logits = model(seq[:, :-1])[:, P - 1 :, :n_vocab]
    return gather_token_logps(logits, responses, with_dist)


def exact_token_kl(policy_dist: Tensor, reference_dist: Tensor) -> Tensor:
    """KL(policy‖reference) at each position, summed over the vocabulary: ``[..., V] -> [...]``."""
    return (policy_dist.exp() * (policy_dist - reference_dist)).sum(-1)


__all__ = ["token_log_probs", "exact_token_kl", "wpo_token_logweights"]
