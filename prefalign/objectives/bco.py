"""BCO: binary classifier optimisation, with its running reward shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics, unpaired_metrics
from prefalign.objectives.dpo import dpo_rewards
from prefalign.validation import check_in_range


def bco_pair_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    shift: Tensor | float = 0.0,
) -> Tensor:
    r"""Per-example BCO loss, ``[B]``: :math:`-\log\sigma(\beta r_w - \delta) - \log\sigma(-(\beta r_l - \delta))`, :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}`."""
    chosen = beta * (policy_chosen.float() - reference_chosen.float())
    rejected = beta * (policy_rejected.float() - reference_rejected.float())
    return -F.logsigmoid(chosen - shift) - F.logsigmoid(-(rejected - shift))


def bco_unpaired_loss(
    policy: Tensor, reference: Tensor, desirable: Tensor, beta: float = 0.1, shift: Tensor | float = 0.0
) -> Tensor:
    r"""Per-response BCO loss, ``[B]``: :math:`-\log\sigma(\beta r - \delta)` if desirable, else :math:`-\log\sigma(-(\beta r - \delta))`."""
    z = beta * (policy.float() - reference.float()) - shift
    return -F.logsigmoid(torch.where(desirable.bool(), z, -z))


class BCO(Objective):
    r"""Binary Classifier Optimization (Jung et al., 2024, "Binary Classifier Optimization for Large Language Model
    Alignment", arXiv:2404.04656); TRL's ``loss_type="bco_pair"`` and ``BCOTrainer``.

    The implicit reward :math:`\beta r`, :math:`r = \log\frac{\pi_\theta}{\pi_{ref}}`, is the logit of a binary
    classifier that tells desirable responses from undesirable ones, shifted by :math:`\delta`, the running mean of
    all rewards seen so far (the paper's reward shift, which makes the classifier's decision boundary follow the
    rewards as they drift):

    .. math:: \mathcal{L} = -\log\sigma(\beta r_w - \delta) - \log\sigma(-(\beta r_l - \delta))

    :math:`\delta` is updated from each training batch before it is used (TRL's ``RunningMoments``: the mean over
    every reward seen, all ranks under DDP), kept in the checkpoint (buffers ``reward_shift``, ``reward_count``) and
    frozen in evaluation. With ``data.init_args.unpaired: true`` each response is classified alone
    (:func:`bco_unpaired_loss`). TRL's optional density-ratio weighting of prompts (UDM) is not implemented.
    At :math:`r_w = r_l = \delta = 0` the pair loss is :math:`2\log 2`.

    Args:
        beta: inverse temperature of the implicit reward.

    Metrics: as :class:`~prefalign.objectives.DPO`, plus ``reward_shift`` (:math:`\delta`).
    """

    accepts_unpaired = True
    logratio_only = True

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        self.beta = beta
        self.register_buffer("reward_shift", torch.zeros(()))
        self.register_buffer("reward_count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def _update_shift(self, rewards: Tensor) -> None:
        total, count = (
            rewards.detach().float().sum().double(),
            torch.tensor(float(rewards.numel()), dtype=torch.float64, device=rewards.device),
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            both = torch.stack([total, count])
            torch.distributed.all_reduce(both)
            total, count = both[0], both[1]
        new_count = self.reward_count + count
        self.reward_shift.copy_(((self.reward_shift.double() * self.reward_count + total) / new_count).float())
        self.reward_count.copy_(new_count)

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        if lp.unpaired:
            rewards = self.beta * (lp.policy_chosen - lp.reference_chosen)
            if self.training:
                self._update_shift(rewards)
            losses = bco_unpaired_loss(
                lp.policy_chosen, lp.reference_chosen, lp.desirable, self.beta, self.reward_shift
            )
            metrics = unpaired_metrics(rewards, lp.policy_chosen, lp.desirable)
        else:
            chosen, rejected = dpo_rewards(lp, self.beta)
            if self.training:
                self._update_shift(torch.cat([chosen, rejected]))
            losses = bco_pair_loss(
                lp.policy_chosen,
                lp.policy_rejected,
                lp.reference_chosen,
                lp.reference_rejected,
                self.beta,
                self.reward_shift,
            )
            metrics = preference_metrics(chosen, rejected, lp.policy_chosen, lp.policy_rejected)
        metrics["reward_shift"] = self.reward_shift.detach().clone()
        return ObjectiveOutput(losses.mean(), metrics, losses)
