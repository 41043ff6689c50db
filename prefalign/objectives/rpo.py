"""RPO: DPO plus an NLL term on the chosen label."""

from __future__ import annotations

from typing import Literal

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
    nll_logps: Tensor | None = None,
) -> Tensor:
    r"""Per-example RPO loss :math:`-\log\sigma(\beta h) - \alpha\log\pi_\theta(y_w|x)`, ``[B]``; the NLL term reads
    ``nll_logps`` when given (a per-token normalisation of the chosen log-probs), else ``policy_chosen``."""
    nll = policy_chosen if nll_logps is None else nll_logps
    return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta) - alpha * nll.float()


class RPO(Objective):
    r"""DPO + NLL, as in Iterative Reasoning Preference Optimization (Pang et al., 2024, arXiv:2404.19733); TRL's ``rpo_alpha``.

    .. math:: \mathcal{L} = -\log\sigma(\beta h) - \alpha \log\pi_\theta(y_w|x)

    DPO only constrains the *difference* of log-ratios, so both :math:`\log\pi_\theta(y_w)` and
    :math:`\log\pi_\theta(y_l)` can fall together; the NLL term keeps the chosen label likely.

    With ``nll="token_mean"`` the NLL is TRL 1.16's ``sft`` loss, the mean over every chosen token of the batch,
    :math:`-\sum_i \log\pi_\theta(y_{w,i}|x_i) / \sum_i |y_{w,i}|` (sequence families only: capability
    ``token_lengths``): TRL's ``loss_type=["sigmoid", "sft"], loss_weights=[1, alpha]``, which replaced ``rpo_alpha``.
    The default ``"sum"`` weighs a response's summed log-prob (a label's log-prob on the classifier).

    Args:
        beta: DPO inverse temperature.
        alpha: weight of the NLL term; 0 is plain DPO.
        nll: ``sum`` (per response) or ``token_mean`` (per chosen token over the batch, TRL's ``sft``).

    Metrics: as :class:`DPO`, plus ``nll``: the NLL term before its weight.
    """

    needs_reference = True
    needs_pairs = True

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, nll: Literal["sum", "token_mean"] = "sum") -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        check_in_range("alpha", alpha, 0.0)
        if nll not in ("sum", "token_mean"):
            raise ValueError(f"nll={nll!r}: expected 'sum' (per response) or 'token_mean' (TRL's sft loss)")
        self.beta = beta
        self.alpha = alpha
        self.nll = nll
        if nll == "token_mean":
            self.requires = frozenset(self.requires) | {"token_lengths"}

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        chosen = lp.policy_chosen
        if self.nll == "token_mean":
            # Scaled so that the batch mean of the per-example losses is Σ NLL / Σ tokens, as TRL's sft term.
            chosen = chosen * (chosen.numel() / lp.chosen_length.sum().clamp(min=1))
        losses = rpo_loss(
            lp.policy_chosen,
            lp.policy_rejected,
            lp.reference_chosen,
            lp.reference_rejected,
            self.beta,
            self.alpha,
            chosen,
        )
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        metrics["nll"] = -chosen.detach().mean()
        return ObjectiveOutput(losses.mean(), metrics, losses)
