"""The shared shape of the losses that take only β and a pair's four log-probs (NCA, SPPO, APO, ...)."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


class BetaPairObjective(Objective):
    """A preference objective whose per-example loss is ``loss_fn(policy_chosen, policy_rejected, reference_chosen,
    reference_rejected, beta)``; subclasses set ``loss_fn`` and document the formula.

    Metrics: ``rewards/*`` with TRL's reward :math:`\\beta(\\log\\pi_\\theta - \\log\\pi_{ref})`, ``logps/*``.

    Args:
        beta: inverse temperature of the implicit reward.
    """

    logratio_only = True
    loss_fn: Callable[..., Tensor]

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        self.beta = beta

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = type(self).loss_fn(
            lp.policy_chosen, lp.policy_rejected, lp.reference_chosen, lp.reference_rejected, self.beta
        )
        return ObjectiveOutput(
            losses.mean(), preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected), losses
        )
