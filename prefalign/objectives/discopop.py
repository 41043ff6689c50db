"""DiscoPOP: the LLM-discovered log-ratio modulated loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, logratio_diff, preference_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


def discopop_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    tau: float = 0.05,
) -> Tensor:
    r"""Per-example DiscoPOP loss, ``[B]``: :math:`(1 - \sigma(\beta h/\tau))(-\log\sigma(\beta h)) + \sigma(\beta h/\tau)e^{-\beta h}`."""
    z = beta * logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    # m * e^{-z} as exp(log m - z): for a very negative margin m underflows to 0 while e^{-z} overflows to inf,
    # and 0 * inf would be NaN. (1 - m) = sigmoid(-z / tau).
    return torch.sigmoid(-z / tau) * -F.logsigmoid(z) + torch.exp(F.logsigmoid(z / tau) - z)


class DiscoPOP(Objective):
    r"""DiscoPOP, log-ratio modulated loss (Chris Lu et al., 2024, "Discovering Preference Optimization Algorithms
    with and for Large Language Models", arXiv:2406.08414, Eq. 5); TRL's ``loss_type="discopop"``.

    With :math:`z = \beta h` and the mixing weight :math:`m = \sigma(z/\tau)`:

    .. math:: \mathcal{L} = (1 - m)\,(-\log\sigma(z)) + m\,e^{-z}

    A blend of DPO's logistic loss (for negative margins) and an exponential loss (for positive ones), switched
    by the sign of the margin with sharpness :math:`\tau` (0.05 in the paper and TRL). At :math:`h = 0`:
    :math:`\frac12\log 2 + \frac12`. The blend is not monotone: for :math:`\tau < (1-\log 2)/3 \approx 0.10` its slope at
    :math:`z = 0` is :math:`\frac{1-\log 2}{4\tau} - \frac34 > 0`, so around a zero margin (where every pair starts, the
    policy being the reference) a gradient step *lowers* the margin until noise pushes it to either side.

    Args:
        beta: inverse temperature of the implicit reward.
        tau: temperature of the mixing sigmoid.

    Metrics: as :class:`~prefalign.objectives.DPO`.
    """

    logratio_only = True

    def __init__(self, beta: float = 0.1, tau: float = 0.05) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("tau", tau, 0.0, low_open=True)
        self.beta = beta
        self.tau = tau

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = discopop_loss(
            lp.policy_chosen, lp.policy_rejected, lp.reference_chosen, lp.reference_rejected, self.beta, self.tau
        )
        return ObjectiveOutput(
            losses.mean(), preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected), losses
        )
