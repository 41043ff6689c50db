"""NCA: noise-contrastive alignment, pairwise form."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.beta_pair import BetaPairObjective


def nca_pair_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    r"""Per-example NCA loss, ``[B]``: :math:`-\log\sigma(\beta r_w) - \tfrac12\log\sigma(-\beta r_w) - \tfrac12\log\sigma(-\beta r_l)`."""
    chosen = beta * (policy_chosen.float() - reference_chosen.float())
    rejected = beta * (policy_rejected.float() - reference_rejected.float())
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


class NCA(BetaPairObjective):
    r"""NCA (Chen et al., 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards",
    arXiv:2402.05369), pairwise preference form; TRL's ``loss_type="nca_pair"``.

    With :math:`r = \beta\log\frac{\pi_\theta}{\pi_{ref}}`:

    .. math:: \mathcal{L} = -\log\sigma(r_w) - \tfrac12\log\sigma(-r_w) - \tfrac12\log\sigma(-r_l)

    Unlike DPO, which only moves the *difference* :math:`r_w - r_l` (so both likelihoods can fall together), NCA
    scores each response on its own: the first term pulls :math:`r_w` up, the others keep both rewards from
    drifting to :math:`\pm\infty`. Its per-example minimiser in :math:`r_w` is :math:`\log 2` (where
    :math:`\sigma(r_w) = 2/3`), and the loss keeps lowering :math:`r_l`. At :math:`r_w = r_l = 0`: :math:`2\log 2`.

    Args:
        beta: inverse temperature of the implicit reward.

    Metrics: as :class:`~prefalign.objectives.DPO`.
    """

    loss_fn = staticmethod(nca_pair_loss)
