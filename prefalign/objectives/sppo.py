"""SPPO (hard labels): regress each response's log-ratio to ±1/(2β)."""

from __future__ import annotations

from torch import Tensor

from prefalign.objectives.beta_pair import BetaPairObjective


def sppo_hard_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    r"""Per-example SPPO loss, ``[B]``: :math:`(r_w - \frac{1}{2\beta})^2 + (r_l + \frac{1}{2\beta})^2`, :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}`."""
    chosen = policy_chosen.float() - reference_chosen.float()
    rejected = policy_rejected.float() - reference_rejected.float()
    return (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2


class SPPO(BetaPairObjective):
    r"""Self-Play Preference Optimization (Wu et al., 2024, arXiv:2405.00675), hard-label form; TRL's ``loss_type="sppo_hard"``.

    SPPO regresses :math:`\log\frac{\pi_\theta(y|x)}{\pi_t(y|x)}` to :math:`\eta(P(y \succ \pi_t|x) - \frac12)` (Eq. 4.7).
    With hard win probabilities (1 for the chosen response, 0 for the rejected) and :math:`\eta = 1/\beta`:

    .. math:: \mathcal{L} = \left(r_w - \frac{1}{2\beta}\right)^2 + \left(r_l + \frac{1}{2\beta}\right)^2,\quad r = \log\frac{\pi_\theta}{\pi_{ref}}

    The reference plays the previous self-play iterate :math:`\pi_t`; run it with
    :class:`~prefalign.callbacks.IterativeMining` and :class:`~prefalign.callbacks.ReferenceUpdate` for the paper's loop.
    At :math:`r_w = r_l = 0` the loss is :math:`\frac{1}{2\beta^2}`.

    Args:
        beta: the target log-ratios are :math:`\pm\frac{1}{2\beta}`.

    Metrics: as :class:`~prefalign.objectives.DPO`.
    """

    loss_fn = staticmethod(sppo_hard_loss)
