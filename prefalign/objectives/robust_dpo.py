"""Robust DPO: an unbiased DPO loss under a known rate of flipped preference labels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, logratio_diff, preference_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


def robust_dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Per-example rDPO loss :math:`[-(1-\epsilon)\log\sigma(\beta h) + \epsilon\log\sigma(-\beta h)] / (1-2\epsilon)`, ``[B]``."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"robust DPO needs label_smoothing in [0, 0.5) (the 1/(1-2*eps) correction blows up at 0.5), got {label_smoothing}."
        )
    h = logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


class RobustDPO(Objective):
    r"""Robust DPO (Chowdhury, Kini & Natarajan, 2024, "Provably Robust DPO", arXiv:2403.00409).

    If each preference label is flipped independently with probability :math:`\epsilon`, the loss

    .. math:: \mathcal{L} = \frac{-(1-\epsilon)\log\sigma(\beta h) + \epsilon\log\sigma(-\beta h)}{1 - 2\epsilon}

    is, in expectation over the flips, the DPO loss on the clean labels (unlike cDPO, which is biased).
    Note the sign of the :math:`\epsilon` term: it *rewards* agreement with the flipped label, so the
    per-example loss is unbounded below; keep :math:`\epsilon` at the real noise rate.

    Args:
        beta: inverse temperature of the implicit reward.
        label_smoothing: the label-flip rate :math:`\epsilon \in [0, 0.5)`; 0 is plain DPO.

    Metrics: same as :class:`DPO`.
    """

    logratio_only = True
    needs_reference = True
    needs_pairs = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("label_smoothing", label_smoothing, 0.0, 0.5, high_open=True)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = robust_dpo_loss(
            lp.policy_chosen,
            lp.policy_rejected,
            lp.reference_chosen,
            lp.reference_rejected,
            self.beta,
            self.label_smoothing,
        )
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        return ObjectiveOutput(losses.mean(), metrics, losses)
