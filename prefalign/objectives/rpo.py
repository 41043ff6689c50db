"""RPO: DPO plus an NLL term on the chosen label."""

from __future__ import annotations

from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.objectives.dpo import dpo_loss, dpo_rewards
from prefalign.validation import check_in_range


def rpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    alpha: float = 1.0,
) -> Tensor:
    r"""Per-example RPO loss :math:`-\log\sigma(\beta h) - \alpha\log\pi_\theta(y_w|x)`, ``[B]``."""
    return (
        dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
        - alpha * policy_chosen.float()
    )


class RPO(Objective):
    r"""DPO + NLL, as in Iterative Reasoning Preference Optimization (Pang et al., 2024, arXiv:2404.19733); TRL's ``rpo_alpha``.

    .. math:: \mathcal{L} = -\log\sigma(\beta h) - \alpha \log\pi_\theta(y_w|x)

    DPO only constrains the *difference* of log-ratios, so both :math:`\log\pi_\theta(y_w)` and
    :math:`\log\pi_\theta(y_l)` can fall together; the NLL term keeps the chosen label likely.

    Args:
        beta: DPO inverse temperature.
        alpha: weight of the NLL term; 0 is plain DPO.

    Metrics: as :class:`DPO`, plus ``nll`` :math:`= -\mathrm{mean}\log\pi_\theta(y_w|x)`.
    """

    needs_reference = True
    needs_pairs = True

    def __init__(self, beta: float = 0.1, alpha: float = 1.0) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("alpha", alpha, 0.0)
        self.beta = beta
        self.alpha = alpha

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = rpo_loss(
            lp.policy_chosen, lp.policy_rejected, lp.reference_chosen, lp.reference_rejected, self.beta, self.alpha
        )
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        metrics["nll"] = -lp.policy_chosen.detach().mean()
        return ObjectiveOutput(losses.mean(), metrics, losses)
