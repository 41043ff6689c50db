"""APO (anchored preference optimisation): zero and down anchors."""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.objectives.beta_pair import BetaPairObjective


def apo_zero_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    r"""Per-example APO-zero loss, ``[B]``: :math:`1 - \sigma(\beta r_w) + \sigma(\beta r_l)`."""
    chosen = beta * (policy_chosen.float() - reference_chosen.float())
    rejected = beta * (policy_rejected.float() - reference_rejected.float())
    return 1 - torch.sigmoid(chosen) + torch.sigmoid(rejected)


def apo_down_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    r"""Per-example APO-down loss, ``[B]``: :math:`\sigma(\beta r_w) + 1 - \sigma(\beta(r_w - r_l))`."""
    chosen = beta * (policy_chosen.float() - reference_chosen.float())
    rejected = beta * (policy_rejected.float() - reference_rejected.float())
    return torch.sigmoid(chosen) + 1 - torch.sigmoid(chosen - rejected)


class APOZero(BetaPairObjective):
    r"""APO-zero (D'Oosterlinck et al., 2024, "Anchored Preference Optimization and Contrastive Revisions",
    arXiv:2408.06266, Eq. 7); TRL's ``loss_type="apo_zero"``.

    .. math:: \mathcal{L} = 1 - \sigma(\beta r_w) + \sigma(\beta r_l),\quad r = \log\frac{\pi_\theta}{\pi_{ref}}

    Anchored at zero: raises the chosen likelihood and lowers the rejected one, each on its own. For data whose
    chosen answers are better than what the model does now (here: the true digit vs the reference's mistake).
    At :math:`r_w = r_l = 0` the loss is 1.

    Args:
        beta: inverse temperature of the implicit reward.
    """

    loss_fn = staticmethod(apo_zero_loss)


class APODown(BetaPairObjective):
    r"""APO-down (D'Oosterlinck et al., 2024, arXiv:2408.06266, Eq. 8); TRL's ``loss_type="apo_down"``.

    .. math:: \mathcal{L} = \sigma(\beta r_w) + 1 - \sigma(\beta(r_w - r_l)),\quad r = \log\frac{\pi_\theta}{\pi_{ref}}

    Lowers the chosen likelihood and the rejected one more: for data whose chosen answers are *worse* than the
    model's own (it should learn the contrast, not imitate). At :math:`r_w = r_l = 0` the loss is 1.

    Args:
        beta: inverse temperature of the implicit reward.
    """

    loss_fn = staticmethod(apo_down_loss)
