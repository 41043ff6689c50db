"""EXO: preference optimisation as reverse-KL matching of the policy's pair distribution to the labels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, logratio_diff, preference_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


def exo_pair_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 1e-3,
) -> Tensor:
    r"""Per-example EXO loss, ``[B]``: :math:`\sigma(\beta h)(\log\sigma(\beta h) - \log(1-\epsilon)) + \sigma(-\beta h)(\log\sigma(-\beta h) - \log\epsilon)`."""
    h = beta * logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return torch.sigmoid(h) * (F.logsigmoid(h) - math.log1p(-label_smoothing)) + torch.sigmoid(-h) * (
        F.logsigmoid(-h) - math.log(label_smoothing)
    )


class EXO(Objective):
    r"""EXO, efficient exact optimisation (Ji et al., 2024, "Towards Efficient Exact Optimization of Language Model
    Alignment", arXiv:2402.00856, Eq. 16 with K = 2); TRL's ``loss_type="exo_pair"``.

    The policy's distribution over the pair, :math:`q = \mathrm{softmax}(\beta r_w, \beta r_l) = (\sigma(\beta h), \sigma(-\beta h))`
    with :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}`, :math:`h = r_w - r_l`, is fitted to the smoothed labels
    :math:`p = (1-\epsilon, \epsilon)` by the *reverse* KL (mode seeking), where DPO minimises the forward KL:

    .. math:: \mathcal{L} = KL(q\|p) = \sigma(\beta h)\log\frac{\sigma(\beta h)}{1-\epsilon} + \sigma(-\beta h)\log\frac{\sigma(-\beta h)}{\epsilon}

    Its minimum is :math:`h^* = \frac1\beta\log\frac{1-\epsilon}{\epsilon}`, where the loss is 0. :math:`\epsilon` must be
    positive (the loss is infinite at 0); the paper and TRL use :math:`10^{-3}`. At :math:`h = 0` the loss is
    :math:`-\log 2 - \frac12\log(\epsilon(1-\epsilon))`.

    Args:
        beta: inverse temperature of the implicit reward.
        label_smoothing: :math:`\epsilon \in (0, 0.5)`.

    Metrics: as :class:`~prefalign.objectives.DPO`.
    """

    logratio_only = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 1e-3) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("label_smoothing", label_smoothing, 0.0, 0.5, low_open=True, high_open=True)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = exo_pair_loss(
            lp.policy_chosen,
            lp.policy_rejected,
            lp.reference_chosen,
            lp.reference_rejected,
            self.beta,
            self.label_smoothing,
        )
        return ObjectiveOutput(
            losses.mean(), preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected), losses
        )
