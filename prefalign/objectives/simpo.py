"""SimPO: a reference-free sigmoid loss with a target reward margin."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.validation import check_in_range


def simpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, beta: float = 2.0, gamma: float = 0.5) -> Tensor:
    r"""Per-example SimPO loss :math:`-\log\sigma(\beta\log\pi_\theta(y_w|x) - \beta\log\pi_\theta(y_l|x) - \gamma)`, ``[B]``."""
    return -F.logsigmoid(beta * (policy_chosen.float() - policy_rejected.float()) - gamma)


class SimPO(Objective):
    r"""SimPO (Meng, Xia & Chen, 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", arXiv:2405.14734).

    .. math:: \mathcal{L} = -\log\sigma\left(\frac{\beta}{|y_w|}\log\pi_\theta(y_w|x) - \frac{\beta}{|y_l|}\log\pi_\theta(y_l|x) - \gamma\right)

    The length normalisation :math:`1/|y|` is trivially 1 here: a "response" is a single class label.
    No reference model: the implicit reward is the (scaled) policy log-likelihood itself, and
    :math:`\gamma` asks for a margin of :math:`\gamma/\beta` nats between chosen and rejected.

    Args:
        beta: reward scale.
        gamma: target reward margin (in reward units, as in the paper and TRL's ``simpo_gamma``).

    Metrics: ``rewards/*`` with the implicit reward :math:`r = \beta\log\pi_\theta(y|x)` (as TRL's CPO/SimPO
    trainer); accuracy therefore ignores :math:`\gamma`.
    """

    needs_reference = False
    needs_pairs = True
    length_normalized = True  # the paper's reward is the mean token log-prob (beta / |y|)

    def __init__(self, beta: float = 2.0, gamma: float = 0.5) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("gamma", gamma, 0.0)
        self.beta = beta
        self.gamma = gamma

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = simpo_loss(lp.policy_chosen, lp.policy_rejected, self.beta, self.gamma)
        metrics = preference_metrics(
            self.beta * lp.policy_chosen, self.beta * lp.policy_rejected, lp.policy_chosen, lp.policy_rejected
        )
        return ObjectiveOutput(losses.mean(), metrics, losses)
