"""PPO-lite: GRPO-style clipped policy gradient on sampled labels, with an exact KL penalty and no value net.

For one image the "response" is a single label, so a rollout is k labels sampled from the policy; their
rewards, normalised within the group of k, are the advantages (no critic). The KL to the reference is
computed exactly over the C classes instead of being estimated from samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prefalign.objectives.base import ObjectiveOutput, check_in_range
from prefalign.objectives.rewards import CorrectLabelReward, RewardFunction

# exp(20) ~ 5e8: far beyond any ratio a clipped update produces, and far from fp32 overflow (exp(89)).
_MAX_LOG_RATIO = 20.0


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    r"""GRPO advantages (Shao et al., 2024, DeepSeekMath, arXiv:2402.03300): :math:`A_{ij} = (r_{ij} - \bar r_i) / (\mathrm{std}_i + \epsilon)`.

    ``rewards [B, k]`` → ``[B, k]``. The std is the unbiased one over the k samples of each image (as TRL's
    GRPO). A group whose rewards are all equal carries no preference signal and gets exactly zero
    advantage (rather than rounding noise divided by ``eps``).
    """
    if rewards.dim() != 2:
        raise ValueError(f"group_advantages expects rewards of shape [B, k], got {tuple(rewards.shape)}.")
    r = rewards.float()
    k = r.shape[1]
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, correction=1 if k > 1 else 0)
    flat = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(r), (r - mean) / (std + eps))


def ppo_clip_loss(logps_new: Tensor, logps_old: Tensor, advantages: Tensor, clip_eps: float = 0.2) -> tuple[Tensor, Tensor]:
    r"""PPO clipped surrogate (Schulman et al., 2017, arXiv:1707.06347), all inputs ``[B, k]``.

    .. math:: \mathcal{L} = -\mathrm{mean}\left[\min(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A)\right],\quad \rho = e^{\log\pi_{new} - \log\pi_{old}}

    Returns ``(loss, clip_fraction)`` with ``clip_fraction = mean(|rho - 1| > eps)`` (detached).
    ``logps_old`` and ``advantages`` are treated as constants (detached): gradients flow only through the new policy.
    """
    log_ratio = (logps_new.float() - logps_old.float().detach()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    adv = advantages.float().detach()
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    clip_fraction = ((ratio.detach() - 1).abs() > clip_eps).float().mean()
    return -surrogate.mean(), clip_fraction


def exact_kl(policy_logps_full: Tensor, reference_logps_full: Tensor) -> Tensor:
    r"""Exact :math:`KL(\pi_\theta\|\pi_{ref}) = \sum_c \pi_\theta(c)(\log\pi_\theta(c) - \log\pi_{ref}(c))` per row: ``[B, C]`` log-softmax inputs → ``[B]``."""
    p_logp = policy_logps_full.float()
    return (p_logp.exp() * (p_logp - reference_logps_full.float())).sum(dim=-1)


def gather_logps(logps_full: Tensor, samples: Tensor) -> Tensor:
    """Log-probabilities of sampled labels: ``[B, C]`` and ``[B, k]`` (long) → ``[B, k]``."""
    return logps_full.float().gather(1, samples.long())


class PPOLite(nn.Module):
    r"""PPO-lite: GRPO-style clipped policy gradient with an exact KL penalty (no value network).

    Per step: sample k labels per image from the current policy (:meth:`sample`), score them with
    ``reward``, turn rewards into group-normalised advantages (:func:`group_advantages`), then for
    ``ppo_epochs`` passes minimise (:meth:`loss`)

    .. math:: \mathcal{L} = -\mathrm{mean}\left[\min(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon)A)\right]
              + \beta_{KL}\,\mathrm{mean}_x KL(\pi_\theta(\cdot|x)\|\pi_{ref}(\cdot|x))

    PPO: Schulman et al., 2017 (arXiv:1707.06347); group advantages: Shao et al., 2024 (GRPO, arXiv:2402.03300).

    Args:
        k: samples per image (group size); at least 2, since a group of one has no baseline.
        clip_eps: PPO clipping range :math:`\epsilon`.
        ppo_epochs: optimisation passes over each batch of samples (the caller loops; stored here so the config lives in one place).
        kl_coef: :math:`\beta_{KL}`; 0 disables the KL term (and the need for a reference).
        reward: the reward function.

    Metrics: ``ppo/loss_surrogate``, ``ppo/clip_fraction``, ``ppo/kl`` (mean exact KL; omitted when no reference is given).
    """

    needs_reference = True
    needs_pairs = False

    def __init__(self, k: int = 8, clip_eps: float = 0.2, ppo_epochs: int = 4, kl_coef: float = 0.05, reward: RewardFunction = CorrectLabelReward()) -> None:
        super().__init__()
        check_in_range("k", k, 2)
        check_in_range("clip_eps", clip_eps, 0.0, 1.0, low_open=True, high_open=True)
        check_in_range("ppo_epochs", ppo_epochs, 1)
        check_in_range("kl_coef", kl_coef, 0.0)
        self.k = k
        self.clip_eps = clip_eps
        self.ppo_epochs = ppo_epochs
        self.kl_coef = kl_coef
        self.reward = reward

    @torch.no_grad()
    def sample(self, logps_full: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``k`` labels per row, with replacement, from ``exp(logps_full)``: ``[B, C]`` → ``[B, k]`` (long)."""
        return torch.multinomial(logps_full.float().exp(), self.k, replacement=True, generator=generator)

    def loss(
        self,
        logps_new_full: Tensor,
        samples: Tensor,
        logps_old: Tensor,
        advantages: Tensor,
        reference_logps_full: Tensor | None = None,
    ) -> ObjectiveOutput:
        """Clipped surrogate on ``samples`` plus ``kl_coef`` times the mean exact KL to the reference."""
        if samples.dim() != 2 or logps_new_full.dim() != 2 or samples.shape[0] != logps_new_full.shape[0]:
            raise ValueError(f"PPOLite.loss expects logps_new_full [B, C] and samples [B, k], got {tuple(logps_new_full.shape)} and {tuple(samples.shape)}.")
        if logps_old.shape != samples.shape or advantages.shape != samples.shape:
            raise ValueError(f"PPOLite.loss: logps_old {tuple(logps_old.shape)} and advantages {tuple(advantages.shape)} must match samples {tuple(samples.shape)}.")
        surrogate, clip_fraction = ppo_clip_loss(gather_logps(logps_new_full, samples), logps_old, advantages, self.clip_eps)
        metrics = {"ppo/loss_surrogate": surrogate.detach(), "ppo/clip_fraction": clip_fraction}
        loss = surrogate
        if reference_logps_full is not None:
            if reference_logps_full.shape != logps_new_full.shape:
                raise ValueError(f"PPOLite.loss: reference_logps_full {tuple(reference_logps_full.shape)} must match logps_new_full {tuple(logps_new_full.shape)}.")
            kl = exact_kl(logps_new_full, reference_logps_full).mean()
            loss = loss + self.kl_coef * kl
            metrics["ppo/kl"] = kl.detach()
        elif self.kl_coef > 0:
            raise ValueError(
                f"objective PPOLite (kl_coef={self.kl_coef}) needs reference log-probs; set model.reference_ckpt to a "
                "weights file (e.g. the SFT checkpoint), or set kl_coef: 0 to train without the KL penalty."
            )
        return ObjectiveOutput(loss, metrics)
