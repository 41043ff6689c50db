"""SLiC-HF hinge loss on the reference-normalised log-ratio margin."""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, check_in_range, logratio_diff, preference_metrics
from prefalign.objectives.dpo import dpo_rewards


def hinge_loss(policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor, beta: float = 0.1) -> Tensor:
    r"""Per-example hinge loss :math:`\max(0, 1 - \beta h)`, ``[B]``."""
    h = logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return torch.relu(1 - beta * h)


class Hinge(Objective):
    r"""SLiC-HF hinge loss (Zhao et al., 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", arXiv:2305.10425), in TRL's form.

    .. math:: \mathcal{L} = \max(0,\ 1 - \beta h),\quad
              h = \log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}

    Pairs whose margin already exceeds :math:`1/\beta` contribute no gradient, so the policy stops moving
    once every pair is separated by that margin (SLiC's :math:`\delta = 1/\beta`).

    Args:
        beta: inverse margin; the hinge is inactive once :math:`h \ge 1/\beta`.

    Metrics: ``rewards/*`` with reward :math:`\beta(\log\pi_\theta - \log\pi_{ref})`.
    """

    logratio_only = True
    needs_reference = True
    needs_pairs = True

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        self.beta = beta

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = hinge_loss(lp.policy_chosen, lp.policy_rejected, lp.reference_chosen, lp.reference_rejected, self.beta)
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        return ObjectiveOutput(losses.mean(), metrics, losses)
