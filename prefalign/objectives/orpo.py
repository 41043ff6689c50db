"""ORPO: NLL plus a reference-free odds-ratio preference term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.validation import check_in_range

# p is indistinguishable from 1 in fp32 above 1 - eps; capping log p there keeps log(1 - p) finite when a
# confident model's log_softmax returns exactly 0.
_MAX_LOGP = -torch.finfo(torch.float32).eps


def log1mexp(a: Tensor) -> Tensor:
    r""":math:`\log(1 - e^{a})` for :math:`a < 0`, accurate at both ends (Mächler, 2012, "Accurately computing log(1 - exp(-|a|))")."""
    near_zero = a > -math.log(2)
    # Each branch only ever sees inputs it is accurate and finite on, so torch.where's backward cannot pick
    # up inf*0 = NaN from the branch it discards.
    a_near = torch.where(near_zero, a, torch.full_like(a, -1.0))
    a_far = torch.where(near_zero, torch.full_like(a, -1.0), a)
    return torch.where(near_zero, torch.log(-torch.expm1(a_near)), torch.log1p(-torch.exp(a_far)))


def log_odds(logp: Tensor) -> Tensor:
    r"""Log-odds :math:`\log\frac{p}{1-p} = \log p - \log(1-p)` from :math:`\log p`, with :math:`\log p` capped at :math:`-\epsilon_{fp32}`."""
    logp = logp.float().clamp(max=_MAX_LOGP)
    return logp - log1mexp(logp)


def orpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, lam: float = 0.1) -> Tensor:
    r"""Per-example ORPO loss :math:`-\log\pi_\theta(y_w|x) - \lambda\log\sigma(\mathrm{logodds}(y_w) - \mathrm{logodds}(y_l))`, ``[B]``."""
    ratio = log_odds(policy_chosen) - log_odds(policy_rejected)
    return -policy_chosen.float() - lam * F.logsigmoid(ratio)


class ORPO(Objective):
    r"""ORPO (Hong, Lee & Thorne, 2024, "ORPO: Monolithic Preference Optimization without Reference Model", arXiv:2403.07691).

    With :math:`\mathrm{odds}_\theta(y|x) = \frac{\pi_\theta(y|x)}{1-\pi_\theta(y|x)}`,

    .. math:: \mathcal{L} = -\log\pi_\theta(y_w|x) - \lambda\log\sigma\left(\log\frac{\mathrm{odds}_\theta(y_w|x)}{\mathrm{odds}_\theta(y_l|x)}\right)

    SFT and preference alignment in one stage, no reference model. :math:`\log(1-p)` is computed with a
    two-branch ``log1mexp`` and :math:`\log p` is capped at :math:`-\epsilon_{fp32}`, so the loss and its
    gradients stay finite even when the model puts all its mass on one label (the cap removes the
    odds-ratio gradient there; the NLL gradient remains).

    Args:
        lam: weight :math:`\lambda` of the odds-ratio term (TRL's ``beta``).

    Metrics (TRL's ORPO names and definitions): ``rewards/*`` with reward :math:`\lambda\log\pi_\theta(y|x)`
    (so they are all 0 when ``lam=0``), ``logps/*``, ``nll``, ``log_odds_ratio`` :math:`=\mathrm{mean}\log\sigma(\text{ratio})`,
    ``log_odds_chosen`` :math:`=\mathrm{mean}(\text{ratio})`.
    """

    needs_reference = False
    needs_pairs = True
    requires = frozenset({"true_logprob"})  # log(1 - p) needs a normalised probability
    length_normalized = True  # the paper and TRL use the mean token log-prob

    def __init__(self, lam: float = 0.1) -> None:
        super().__init__()
        check_in_range("lam", lam, 0.0)
        self.lam = lam

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = orpo_loss(lp.policy_chosen, lp.policy_rejected, self.lam)
        ratio = (log_odds(lp.policy_chosen) - log_odds(lp.policy_rejected)).detach()
        metrics = preference_metrics(
            self.lam * lp.policy_chosen, self.lam * lp.policy_rejected, lp.policy_chosen, lp.policy_rejected
        )
        metrics["nll"] = -lp.policy_chosen.detach().mean()
        metrics["log_odds_ratio"] = F.logsigmoid(ratio).mean()
        metrics["log_odds_chosen"] = ratio.mean()
        return ObjectiveOutput(losses.mean(), metrics, losses)
