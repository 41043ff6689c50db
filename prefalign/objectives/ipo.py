"""Identity Preference Optimisation: a squared loss that regresses the log-ratio margin to a fixed target."""

from __future__ import annotations

from torch import Tensor

from prefalign.objectives.base import (
    Objective,
    ObjectiveOutput,
    PairLogps,
    logratio_diff,
    per_token_logratios,
    preference_metrics,
)
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


def ipo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    tau: float = 0.1,
) -> Tensor:
    r"""Per-example IPO loss :math:`(h - \frac{1}{2\tau})^2`, ``[B]``."""
    h = logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return (h - 1 / (2 * tau)) ** 2


class IPO(Objective):
    r"""IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences", arXiv:2310.12036).

    .. math:: \mathcal{L} = \left(h - \frac{1}{2\tau}\right)^2,\quad
              h = \log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}

    DPO's sigmoid keeps pushing :math:`h` up even on deterministic preferences, which drives the policy
    away from the reference; IPO instead regresses :math:`h` to the finite target :math:`1/(2\tau)`.
    As in TRL (1.16, ``loss_type="ipo"``), each log-ratio is divided by its response's token count when the family
    gives counts (sequence families): the paper's results use this per-token form (TRL confirmed it with the
    authors). A one-label response (classifier) is unaffected.

    Args:
        tau: regularisation strength; the target margin is :math:`1/(2\tau)` nats.

    Metrics: ``rewards/*`` with reward :math:`\tau(\log\pi_\theta - \log\pi_{ref})` (TRL uses ``beta=tau``).
    """

    logratio_only = True
    needs_reference = True
    needs_pairs = True

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        check_in_range("tau", tau, 0.0, low_open=True)
        self.tau = tau

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        chosen, rejected = per_token_logratios(lp)
        losses = (chosen - rejected - 1 / (2 * self.tau)) ** 2
        metrics = preference_metrics(*dpo_rewards(lp, self.tau), lp.policy_chosen, lp.policy_rejected)
        return ObjectiveOutput(losses.mean(), metrics, losses)
