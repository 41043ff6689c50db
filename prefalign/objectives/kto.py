"""KTO: prospect-theoretic loss on single labelled examples (desirable / undesirable)."""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics, unpaired_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


def kto_reference_point(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    kl: Tensor | None = None,
) -> Tensor:
    r"""The reference point :math:`z_0`, a detached scalar :math:`\ge 0`.

    With ``kl`` (exact per-example :math:`KL(\pi_\theta\|\pi_{ref})`), :math:`z_0 = \mathrm{mean}(kl)`: this is the
    quantity the paper estimates. Without it, fall back to the batch mean of the 2B observed log-ratios,
    :math:`\frac{1}{2}\mathrm{mean}[(\log\pi_\theta(y_w)-\log\pi_{ref}(y_w)) + (\log\pi_\theta(y_l)-\log\pi_{ref}(y_l))]`.
    That is a biased estimate (the labels come from the data, not from :math:`\pi_\theta`), used only because
    it needs nothing beyond the pair; TRL instead uses mismatched (x, y') pairs.
    Detached as in the paper/TRL: :math:`z_0` is a baseline, not something to optimise.
    """
    if kl is not None:
        z0 = kl.float().mean()
    else:
        z0 = (
            (policy_chosen.float() - reference_chosen.float()) + (policy_rejected.float() - reference_rejected.float())
        ).mean() / 2
    return z0.clamp(min=0).detach()


def kto_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    z0: Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    r"""Per-pair KTO loss, ``[B]``: the average of the desirable (chosen) and undesirable (rejected) terms

    .. math:: \tfrac12\left[\lambda_D(1-\sigma(\beta(r_w - z_0))) + \lambda_U(1-\sigma(\beta(z_0 - r_l)))\right],\ r = \log\tfrac{\pi_\theta}{\pi_{ref}}

    Halved so that the batch mean equals TRL's mean over the 2B concatenated examples.
    """
    chosen_logratios = policy_chosen.float() - reference_chosen.float()
    rejected_logratios = policy_rejected.float() - reference_rejected.float()
    desirable = 1 - torch.sigmoid(beta * (chosen_logratios - z0))
    undesirable = 1 - torch.sigmoid(beta * (z0 - rejected_logratios))
    return (desirable_weight * desirable + undesirable_weight * undesirable) / 2


class KTO(Objective):
    r"""KTO (Ethayarajh, Xu, Muennighoff, Jurafsky & Kiela, 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", arXiv:2402.01306).

    Each example is only "desirable" or "undesirable"; with pairs, the chosen label is desirable and the
    rejected one undesirable. With :math:`r = \log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}` and the reference
    point :math:`z_0 \approx KL(\pi_\theta\|\pi_{ref})` (detached),

    .. math:: \mathcal{L} = \mathbb{E}_{y\ \mathrm{desirable}}[\lambda_D(1-\sigma(\beta(r - z_0)))]
                           + \mathbb{E}_{y\ \mathrm{undesirable}}[\lambda_U(1-\sigma(\beta(z_0 - r)))]

    averaged over all 2B examples, exactly TRL's ``kto_loss`` (``torch.cat(...).mean()``).
    :math:`z_0` is the batch mean of ``PairLogps.kl`` when given (exact, 10 classes), else a batch estimate
    from the observed log-ratios (see :func:`kto_reference_point`); clamped at 0.

    Args:
        beta: inverse temperature of the implicit reward.
        desirable_weight: :math:`\lambda_D`.
        undesirable_weight: :math:`\lambda_U`.

    Unpaired data (``data.init_args.unpaired: true``: every mined response alone, flagged desirable or not, shuffled
    apart from its pair) is KTO's native setting: the same two terms, one per response (:func:`kto_unpaired_loss`).

    Metrics: ``rewards/*`` with reward :math:`\beta r` (TRL), ``logps/*``, and ``kl`` (:math:`z_0`).
    """

    needs_reference = True
    needs_pairs = True
    accepts_unpaired = True
    logratio_only = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("desirable_weight", desirable_weight, 0.0)
        check_in_range("undesirable_weight", undesirable_weight, 0.0)
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        if lp.unpaired:
            return self._unpaired(lp)
        pairs = (lp.policy_chosen, lp.policy_rejected, lp.reference_chosen, lp.reference_rejected)
        z0 = kto_reference_point(*pairs, kl=lp.kl)
        losses = kto_loss(*pairs, z0, self.beta, self.desirable_weight, self.undesirable_weight)
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        metrics["kl"] = z0
        return ObjectiveOutput(losses.mean(), metrics, losses)

    def _unpaired(self, lp: PairLogps) -> ObjectiveOutput:
        # KTO's native data: each response alone, flagged desirable or undesirable (the paper's setting; TRL's KTOTrainer).
        logratios = lp.policy_chosen - lp.reference_chosen
        z0 = (lp.kl.mean() if lp.kl is not None else logratios.mean()).clamp(min=0).detach()
        losses = kto_unpaired_loss(
            lp.policy_chosen,
            lp.reference_chosen,
            lp.desirable,
            z0,
            self.beta,
            self.desirable_weight,
            self.undesirable_weight,
        )
        metrics = unpaired_metrics(self.beta * logratios, lp.policy_chosen, lp.desirable)
        metrics["kl"] = z0
        return ObjectiveOutput(losses.mean(), metrics, losses)


def kto_unpaired_loss(
    policy: Tensor,
    reference: Tensor,
    desirable: Tensor,
    z0: Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    r"""Per-response KTO loss, ``[B]``: :math:`\lambda_D(1-\sigma(\beta(r - z_0)))` for a desirable response,
    :math:`\lambda_U(1-\sigma(\beta(z_0 - r)))` for an undesirable one, :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}`."""
    r = policy.float() - reference.float()
    return torch.where(
        desirable.bool(),
        desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))),
    )
