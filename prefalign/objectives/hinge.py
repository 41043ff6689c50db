"""SLiC-HF hinge loss on the reference-normalised log-ratio margin."""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.objectives.base import logratio_diff
from prefalign.objectives.beta_pair import BetaPairObjective


def hinge_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    r"""Per-example hinge loss :math:`\max(0, 1 - \beta h)`, ``[B]``."""
    h = logratio_diff(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return torch.relu(1 - beta * h)


class Hinge(BetaPairObjective):
    r"""SLiC-HF hinge loss (Zhao et al., 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", arXiv:2305.10425), in TRL's form.

    .. math:: \mathcal{L} = \max(0,\ 1 - \beta h),\quad
              h = \log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}

    Pairs whose margin already exceeds :math:`1/\beta` contribute no gradient, so the policy stops moving
    once every pair is separated by that margin (SLiC's :math:`\delta = 1/\beta`).

    Args:
        beta: inverse margin; the hinge is inactive once :math:`h \ge 1/\beta`.

    Metrics: ``rewards/*`` with reward :math:`\beta(\log\pi_\theta - \log\pi_{ref})`.
    """

    loss_fn = staticmethod(hinge_loss)
