"""CPO: contrastive preference optimisation, reference-free DPO plus NLL."""

from __future__ import annotations

from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.objectives.dpo import smoothed_logistic_loss
from prefalign.validation import check_in_range


def cpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, beta: float = 0.1, alpha: float = 1.0, label_smoothing: float = 0.0
) -> Tensor:
    r"""Per-example CPO loss, ``[B]``: :math:`-(1-\epsilon)\log\sigma(\beta d) - \epsilon\log\sigma(-\beta d) - \alpha\log\pi_\theta(y_w)`,
    :math:`d = \log\pi_\theta(y_w) - \log\pi_\theta(y_l)`."""
    return (
        smoothed_logistic_loss(policy_chosen.float() - policy_rejected.float(), beta, label_smoothing)
        - alpha * policy_chosen.float()
    )


class CPO(Objective):
    r"""Contrastive Preference Optimization (Xu et al., 2024, "Contrastive Preference Optimization: Pushing the
    Boundaries of LLM Performance in Machine Translation", arXiv:2401.08417); TRL's ``CPOTrainer`` (sigmoid loss).

    DPO with a uniform reference (dropped from the ratio, so no reference model is needed) plus a behaviour-cloning
    NLL term on the chosen response:

    .. math:: \mathcal{L} = -(1-\epsilon)\log\sigma(\beta d) - \epsilon\log\sigma(-\beta d) - \alpha\log\pi_\theta(y_w|x),\quad
              d = \log\pi_\theta(y_w|x) - \log\pi_\theta(y_l|x)

    TRL averages the NLL per token while the preference term uses summed log-probs; here both use what the
    family returns (sums for sequences; one label for the classifier, where the two agree).

    Args:
        beta: inverse temperature.
        alpha: weight of the NLL term (TRL's ``cpo_alpha``, default 1).
        label_smoothing: :math:`\epsilon \in [0, 0.5]`, as in cDPO.

    Metrics: ``rewards/*`` with TRL's CPO reward :math:`\beta\log\pi_\theta(y|x)`, ``logps/*``, ``nll``.
    """

    needs_reference = False

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("alpha", alpha, 0.0)
        check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
        self.beta = beta
        self.alpha = alpha
        self.label_smoothing = label_smoothing

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = cpo_loss(lp.policy_chosen, lp.policy_rejected, self.beta, self.alpha, self.label_smoothing)
        metrics = preference_metrics(
            self.beta * lp.policy_chosen, self.beta * lp.policy_rejected, lp.policy_chosen, lp.policy_rejected
        )
        metrics["nll"] = -lp.policy_chosen.detach().mean()
        return ObjectiveOutput(losses.mean(), metrics, losses)
