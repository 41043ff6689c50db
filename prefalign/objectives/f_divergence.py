"""f-DPO: replace the reverse-KL log-ratio of any log-ratio objective with another f-divergence's score."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range

Divergence = Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]


def f_divergence_score(logratio: Tensor, divergence: Divergence = "reverse_kl", alpha: float = 0.5) -> Tensor:
    r"""The score :math:`f'(u)` (constants dropped) of :math:`u = \pi_\theta/\pi_{ref} = e^{r}`, from the log-ratio :math:`r`:

    reverse KL :math:`r` (DPO); forward KL :math:`-e^{-r}` (:math:`r` clamped at −80 so it stays finite); Jensen–Shannon :math:`\log\sigma(r)`;
    α-divergence :math:`\frac{e^{(\alpha-1) r}}{\alpha-1}` (= reverse KL in the limit :math:`\alpha\to1`).
    """
    r = logratio.float()
    if divergence == "reverse_kl":
        return r
    if divergence == "forward_kl":
        return -torch.exp((-r).clamp(max=80.0))  # clamped like the alpha case: finite for any log-ratio
    if divergence == "js_divergence":
        return F.logsigmoid(r)
    if divergence == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return r
        # Clamped so exp() stays finite in fp32 whatever the log-ratio (TRL does the same).
        return torch.exp(((alpha - 1.0) * r).clamp(max=80.0)) / (alpha - 1.0)
    raise ValueError(
        f"unknown divergence {divergence!r}; expected reverse_kl, forward_kl, js_divergence or alpha_divergence"
    )


class FDivergence(Objective):
    r"""f-DPO (Wang et al., 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse
    Divergence Constraints", arXiv:2309.16240); TRL's ``f_divergence_type`` / ``f_alpha_divergence_coef``.

    DPO's implicit reward :math:`\beta\log\frac{\pi_\theta}{\pi_{ref}}` comes from a reverse-KL constraint. Under an
    f-divergence constraint it becomes :math:`\beta f'(\pi_\theta/\pi_{ref})`; this modifier gives the wrapped
    objective :math:`s = f'(e^{r})` (see :func:`f_divergence_score`) wherever it reads a log-ratio :math:`r`, e.g. for DPO

    .. math:: \mathcal{L} = -\log\sigma\big(\beta(f'(u_w) - f'(u_l))\big),\quad u = \pi_\theta/\pi_{ref}

    It wraps any objective that reads the policy and reference only through the log-ratio (DPO, cDPO, robust DPO,
    IPO, hinge, KTO, EXO, NCA, BCO, SPPO, APO, DiscoPOP, AOTPair) and refuses the others with the reason. The
    ``logps/*`` metrics stay the true log-probs, and ``rewards/*`` stay TRL's :math:`\beta\log\frac{\pi_\theta}{\pi_{ref}}`
    (for a wrapped objective with a ``beta``), so they compare across divergences.

    Args:
        objective: the objective to modify, e.g. ``{class_path: prefalign.objectives.DPO, init_args: {beta: 0.1}}``.
        divergence: ``reverse_kl`` (identity: plain DPO), ``forward_kl``, ``js_divergence``, ``alpha_divergence``.
        alpha: the α of the α-divergence, in (0, 1) in the paper.
    """

    def __init__(self, objective: Objective, divergence: Divergence = "reverse_kl", alpha: float = 0.5) -> None:
        super().__init__()
        if not getattr(objective, "logratio_only", False):
            raise ValueError(
                f"FDivergence cannot wrap {type(objective).__name__}: it reads log-probabilities beyond the log-ratio "
                "log pi - log pi_ref (an NLL term, a reference-free score or a sort of the policy margins), which an "
                "f-divergence score cannot stand in for. Wrap a log-ratio objective such as DPO, IPO or KTO."
            )
        f_divergence_score(torch.zeros(1), divergence, alpha)  # an unknown name fails here, at config time
        if divergence == "alpha_divergence":
            check_in_range("alpha", alpha, 0.0, low_open=True)
        self.objective = objective
        self.divergence = divergence
        self.alpha = alpha
        self.take_flags_of(objective)

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)

        def score(policy: Tensor | None, reference: Tensor | None) -> Tensor | None:
            return None if policy is None else f_divergence_score(policy - reference, self.divergence, self.alpha)

        zero = torch.zeros_like(lp.policy_chosen)
        scored = replace(
            lp,
            policy_chosen=score(lp.policy_chosen, lp.reference_chosen),
            reference_chosen=zero,
            policy_rejected=score(lp.policy_rejected, lp.reference_rejected),
            reference_rejected=None if lp.policy_rejected is None else zero,
        )
        out = self.objective(scored)
        beta = getattr(self.objective, "beta", None)
        if beta is not None and lp.policy_rejected is not None and "rewards/chosen" in out.metrics:
            # TRL logs β·log(π/π_ref) as the reward whatever the divergence: the numbers stay comparable across
            # divergences, and with TRL's.
            out.metrics.update(preference_metrics(*dpo_rewards(lp, beta), lp.policy_chosen, lp.policy_rejected))
        else:
            out.metrics["logps/chosen"] = lp.policy_chosen.detach().mean()
            if lp.policy_rejected is not None:
                out.metrics["logps/rejected"] = lp.policy_rejected.detach().mean()
        return out
