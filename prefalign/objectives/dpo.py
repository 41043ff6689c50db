"""Direct Preference Optimization (sigmoid loss), with conservative label smoothing (cDPO)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, logratio_diff, preference_metrics
from prefalign.validation import check_in_range


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Per-example (c)DPO loss :math:`-(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)`, ``[B]``."""
    h = logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return smoothed_logistic_loss(h, beta, label_smoothing)


def smoothed_logistic_loss(margin: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    r""":math:`-(1-\epsilon)\log\sigma(\beta m) - \epsilon\log\sigma(-\beta m)`: the logistic loss on a margin with the
    labels assumed flipped with probability :math:`\epsilon` (cDPO); DPO, AOT and CPO differ only in the margin."""
    # logsigmoid rather than log(sigmoid(.)) so that large |beta*m| cannot underflow to log(0).
    return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)


def dpo_rewards(logps: PairLogps, beta: float) -> tuple[Tensor, Tensor]:
    r"""TRL's implicit rewards :math:`\beta(\log\pi_\theta(y|x) - \log\pi_{ref}(y|x))` for chosen and rejected."""
    return beta * (logps.policy_chosen - logps.reference_chosen), beta * (
        logps.policy_rejected - logps.reference_rejected
    )


class DPO(Objective):
    r"""Direct Preference Optimization, sigmoid form (Rafailov et al., 2023, arXiv:2305.18290).

    With :math:`h = \log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}`,

    .. math:: \mathcal{L} = -(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)

    ``label_smoothing`` :math:`=\epsilon > 0` gives conservative DPO (cDPO; Mitchell, 2023, "A note on DPO
    with noisy preferences"): the labels are assumed flipped with probability :math:`\epsilon`, which bounds
    the optimal :math:`h` instead of pushing it to infinity. :math:`\epsilon=0` is plain DPO.

    Args:
        beta: inverse temperature of the implicit reward; smaller values let the policy move further from the reference.
        label_smoothing: assumed label-flip probability :math:`\epsilon \in [0, 0.5]`.

    Metrics: ``rewards/*`` with reward :math:`\beta(\log\pi_\theta - \log\pi_{ref})` (TRL), ``logps/*``.
    """

    logratio_only = True
    needs_reference = True
    needs_pairs = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = dpo_loss(
            lp.policy_chosen,
            lp.policy_rejected,
            lp.reference_chosen,
            lp.reference_rejected,
            self.beta,
            self.label_smoothing,
        )
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        return ObjectiveOutput(losses.mean(), metrics, losses)
