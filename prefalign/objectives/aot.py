"""AOT: alignment via optimal transport, a distributional (batch-sorted) DPO."""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.objectives.dpo import dpo_rewards, smoothed_logistic_loss
from prefalign.validation import check_in_range


def aot_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""AOT (paired), ``[B]`` in sorted order: the smoothed logistic loss of
    :math:`\mathrm{sort}(\log\pi_\theta(y_w) - \log\pi_\theta(y_l)) - \mathrm{sort}(\log\pi_{ref}(y_w) - \log\pi_{ref}(y_l))`."""
    policy, _ = torch.sort(policy_chosen.float() - policy_rejected.float())
    reference, _ = torch.sort(reference_chosen.float() - reference_rejected.float())
    return smoothed_logistic_loss(policy - reference, beta, label_smoothing)


def aot_pair_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""AOT (unpaired), ``[B]`` in sorted order: the smoothed logistic loss of
    :math:`\mathrm{sort}(r_w) - \mathrm{sort}(r_l)`, :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}`."""
    chosen, _ = torch.sort(policy_chosen.float() - reference_chosen.float())
    rejected, _ = torch.sort(policy_rejected.float() - reference_rejected.float())
    return smoothed_logistic_loss(chosen - rejected, beta, label_smoothing)


class _AOT(Objective):
    # The per-example losses come out in sorted order, not the batch's: a per-example re-weighting (WPO) would
    # weight the wrong examples, so modifiers refuse it.
    sorted_within_batch = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = self.loss_fn(
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


class AOT(_AOT):
    r"""AOT, paired (Melnyk et al., 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    arXiv:2406.05882); TRL's ``loss_type="aot"``.

    AOT asks for first-order stochastic dominance of the policy's margin distribution over the reference's,
    not a margin per example. In one dimension the optimal-transport plan between two empirical distributions
    matches their order statistics, so the batch's policy margins :math:`m^\theta = \log\pi_\theta(y_w) - \log\pi_\theta(y_l)`
    and reference margins :math:`m^{ref}` are each sorted and paired rank by rank:

    .. math:: \mathcal{L} = \frac1B\sum_i -(1-\epsilon)\log\sigma(\beta\delta_i) - \epsilon\log\sigma(-\beta\delta_i),\quad
              \delta = \mathrm{sort}(m^\theta) - \mathrm{sort}(m^{ref})

    With one example per batch it is (c)DPO. The sort is over each device's batch (as in TRL); under DDP the
    distribution is the per-rank batch. Larger batches give a better quantile match.

    Args:
        beta: inverse temperature.
        label_smoothing: :math:`\epsilon \in [0, 0.5]`, as in cDPO.
    """

    loss_fn = staticmethod(aot_loss)


class AOTPair(_AOT):
    r"""AOT, unpaired form (Melnyk et al., 2024, arXiv:2406.05882); TRL's ``loss_type="aot_unpaired"``, formerly ``aot_pair``.

    The chosen and the rejected log-ratios :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}` are sorted separately, so the
    distribution of chosen rewards must dominate that of rejected rewards, whichever prompt each came from:

    .. math:: \mathcal{L} = \frac1B\sum_i -(1-\epsilon)\log\sigma(\beta\delta_i) - \epsilon\log\sigma(-\beta\delta_i),\quad
              \delta = \mathrm{sort}(r_w) - \mathrm{sort}(r_l)

    Args:
        beta: inverse temperature.
        label_smoothing: :math:`\epsilon \in [0, 0.5]`.
    """

    logratio_only = True
    loss_fn = staticmethod(aot_pair_loss)
