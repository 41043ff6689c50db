"""PPO-lite: GRPO-style clipped policy gradient over sampled responses of any length, with no value network.

A rollout is k responses sampled per prompt (a classifier's response is one label; a language model's a token
sequence). Their rewards, normalised within the group of k (or RLOO's leave-one-out baseline), are the
advantages: no critic. Everything here is shaped ``[B, k, T]`` (tokens) or ``[B, k]`` (per response) with a
``[B, k, T]`` mask, so one loss serves every model family.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from prefalign.objectives.base import ObjectiveOutput
from prefalign.objectives.rewards import CorrectLabelReward, RewardFunction
from prefalign.validation import check_in_range

# exp(20) ~ 5e8: far beyond any ratio a clipped update produces, and far from fp32 overflow (exp(89)).
_MAX_LOG_RATIO = 20.0

LossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]
Baseline = Literal["group", "rloo", "none"]
KLEstimator = Literal["auto", "exact", "k1", "k3"]


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    r"""GRPO advantages (Shao et al., 2024, DeepSeekMath, arXiv:2402.03300): :math:`A_{ij} = (r_{ij} - \bar r_i) / (\mathrm{std}_i + \epsilon)`.

    ``rewards [B, k]`` → ``[B, k]``. The std is the unbiased one over the k samples of each prompt (as TRL's
    GRPO). A group whose rewards are all equal carries no preference signal and gets exactly zero
    advantage (rather than rounding noise divided by ``eps``). A NaN reward (a response no reward function could
    score: TRL's ``None``) is left out of its group's mean and std and gets zero advantage, as in TRL.
    """
    if rewards.dim() != 2:
        raise ValueError(f"group_advantages expects rewards of shape [B, k], got {tuple(rewards.shape)}.")
    r = rewards.float()
    k = r.shape[1]
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, correction=1 if k > 1 else 0)
    flat = (r == r[:, :1]).all(dim=1, keepdim=True)
    plain = torch.where(flat, torch.zeros_like(r), (r - mean) / (std + eps))
    # Groups holding a NaN: the same statistics over their scored responses only (no host sync to pick a branch).
    valid = ~torch.isnan(r)
    n = valid.sum(dim=1, keepdim=True)
    nan_mean = torch.where(valid, r, 0.0).sum(dim=1, keepdim=True) / n.clamp(min=1)
    centred = torch.where(valid, r - nan_mean, 0.0)
    nan_std = (centred.square().sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
    high = torch.where(valid, r, -torch.inf).amax(dim=1, keepdim=True)
    spread = high > torch.where(valid, r, torch.inf).amin(dim=1, keepdim=True)
    masked = torch.where(valid & spread, centred / (nan_std + eps), 0.0)
    return torch.where(valid.all(dim=1, keepdim=True), plain, masked)


def rloo_advantages(rewards: Tensor) -> Tensor:
    r"""RLOO's leave-one-out baseline (Ahmadian et al., 2024, arXiv:2402.14740): :math:`A_{ij} = r_{ij} - \frac{1}{k-1}\sum_{l\ne j} r_{il}`.

    ``rewards [B, k]`` → ``[B, k]``, k ≥ 2; unbiased (a sample's own reward is not in its baseline) and not
    rescaled by the group's std.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rloo_advantages expects rewards of shape [B, k] with k >= 2, got {tuple(rewards.shape)}.")
    r = rewards.float()
    k = r.shape[1]
    return r - (r.sum(dim=1, keepdim=True) - r) / (k - 1)


def clipped_surrogate(
    logps_new: Tensor, logps_old: Tensor, advantages: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, Tensor]:
    r"""Elementwise PPO objective :math:`\min(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A)`, :math:`\rho = e^{\log\pi_{new} - \log\pi_{old}}`.

    Returns ``(surrogate, clipped)`` of the broadcast shape; ``clipped`` (bool, detached) marks :math:`|\rho - 1| > \epsilon`.
    ``logps_old`` and ``advantages`` are constants: gradients flow only through the new policy.
    """
    log_ratio = (logps_new.float() - logps_old.float().detach()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    adv = advantages.float().detach()
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    return surrogate, (ratio.detach() - 1).abs() > clip_eps


def ppo_clip_loss(
    logps_new: Tensor, logps_old: Tensor, advantages: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, Tensor]:
    r"""PPO clipped surrogate (Schulman et al., 2017, arXiv:1707.06347) for one-token responses, inputs ``[B, k]``.

    .. math:: \mathcal{L} = -\mathrm{mean}\left[\min(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A)\right]

    Returns ``(loss, clip_fraction)`` (the fraction detached).
    """
    surrogate, clipped = clipped_surrogate(logps_new, logps_old, advantages, clip_eps)
    return -surrogate.mean(), clipped.float().mean()


def aggregate_token_loss(
    per_token: Tensor, mask: Tensor, loss_type: LossType = "grpo", num_tokens: Tensor | None = None
) -> Tensor:
    r"""Reduce a ``[B, k, T]`` per-token loss to a scalar, the way each RL recipe does (TRL's ``loss_type``).

    * ``grpo`` (Shao et al., 2024): mean over a response's tokens, then over responses — every response weighs
      the same whatever its length.
    * ``bnpo``: sum over all tokens ÷ number of tokens in this batch — every token weighs the same.
    * ``dapo`` (Yu et al., 2025, arXiv:2503.14476): as ``bnpo`` but normalised by ``num_tokens``, the token count
      of the whole global batch (all ranks), so ranks with longer responses are not down-weighted.
    * ``dr_grpo`` (Liu et al., 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783): sum ÷ (responses ×
      maximum length) — a constant normaliser, removing GRPO's length bias.
    """
    m = mask.to(per_token.dtype)
    total = (per_token * m).sum()
    if loss_type == "grpo":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return total / m.sum().clamp(min=1)
    if loss_type == "dapo":
        return total / (num_tokens if num_tokens is not None else m.sum()).clamp(min=1)
    if loss_type == "dr_grpo":
        return total / per_token[..., 0].numel() / per_token.shape[-1]
    raise ValueError(f"unknown loss_type {loss_type!r}; choose grpo, bnpo, dapo or dr_grpo")


def exact_kl(policy_logps_full: Tensor, reference_logps_full: Tensor) -> Tensor:
    r"""Exact :math:`KL(\pi_\theta\|\pi_{ref}) = \sum_c \pi_\theta(c)(\log\pi_\theta(c) - \log\pi_{ref}(c))` over the last dim (log-softmax inputs)."""
    p_logp = policy_logps_full.float()
    return (p_logp.exp() * (p_logp - reference_logps_full.float())).sum(dim=-1)


def estimated_kl(policy_logps: Tensor, reference_logps: Tensor, estimator: Literal["k1", "k3"] = "k3") -> Tensor:
    r"""Per-token KL estimates from the sampled tokens' log-probs (Schulman, 2020, "Approximating KL divergence").

    With :math:`d = \log\pi_{ref} - \log\pi_\theta`: ``k1`` :math:`= -d` (unbiased, can be negative); ``k3``
    :math:`= e^{d} - d - 1` (unbiased, always ≥ 0, low variance; TRL's GRPO).
    """
    d = reference_logps.float() - policy_logps.float()
    if estimator == "k1":
        return -d
    if estimator == "k3":
        return d.clamp(max=_MAX_LOG_RATIO).exp() - d - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1 or k3")


def gather_logps(logps_full: Tensor, samples: Tensor) -> Tensor:
    """Log-probabilities of sampled labels: ``[B, C]`` and ``[B, k]`` (long) → ``[B, k]``."""
    return logps_full.float().gather(1, samples.long())


class PPOLite(nn.Module):
    r"""PPO-lite: GRPO-style clipped policy gradient with a KL penalty to the reference (no value network).

    Per step the module samples k responses per prompt from the current policy (the model family's
    ``rollout``), scores them with ``reward``, turns rewards into advantages (:meth:`advantages`), then for
    ``ppo_epochs`` passes minimises (:meth:`loss`), per response token :math:`t` and aggregated by ``loss_type``,

    .. math:: \ell_t = -\min(\rho_t A,\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)A) + \beta_{KL}\,KL_t

    PPO: Schulman et al., 2017 (arXiv:1707.06347); group advantages: Shao et al., 2024 (GRPO, arXiv:2402.03300).
    :math:`KL_t` is exact (summed over the vocabulary / classes) when the family can afford the full
    distributions (``kl_estimator: auto`` or ``exact``), else the k3 (or k1) estimate from the sampled tokens.
    For a one-label response (the classifier) and ``grpo`` this is the per-sample mean of the clipped
    surrogate plus :math:`\beta_{KL}` times the mean exact KL per image.

    Args:
        k: samples per prompt (group size); at least 2 with a baseline (a group of one has none); 1 with ``baseline: none``.
        clip_eps: PPO clipping range :math:`\epsilon`.
        ppo_epochs: optimisation passes over each batch of samples.
        kl_coef: :math:`\beta_{KL}`; 0 disables the KL term (and the need for a reference).
        reward: the reward function (``forward(rollout) -> [B, k]``).
        loss_type: token aggregation: ``grpo``, ``bnpo``, ``dapo`` or ``dr_grpo`` (see :func:`aggregate_token_loss`).
        baseline: ``group`` (group-normalised, GRPO), ``rloo`` (leave-one-out, RLOO) or ``none`` (the raw reward is the
            advantage: plain REINFORCE, as the tiny-transformer notebook's loop; high variance, kept for reproducing it).
        kl_estimator: ``auto`` (exact when the family gives full distributions, else k3), ``exact``, ``k1`` or ``k3``.
        advantage_eps: added to a group's reward std before dividing by it (``baseline: group``; TRL's GRPO uses 1e-4).
        kl_bias_correction: multiply the estimated (k1/k3) per-token KL by the ratio :math:`\rho_t` (DeepSeek-V3.2,
            TRL 1.16's ``use_bias_correction_kl``, on by default there): its value is 1 on-policy, but its gradient
            makes the KL term's gradient the unbiased reverse-KL gradient.

    Metrics: ``ppo/loss_surrogate``, ``ppo/clip_fraction`` (tokens with :math:`|\rho - 1| > \epsilon`),
    ``ppo/clip_ratio/{low,high,region}_mean`` (TRL's: :math:`\rho < 1 - \epsilon` with :math:`A < 0`,
    :math:`\rho > 1 + \epsilon` with :math:`A > 0`, either), ``ppo/kl`` (mean per-token KL; omitted when no reference
    is given).
    """

    needs_reference = True
    needs_pairs = False
    requires = frozenset({"sampling"})
    length_normalized = False

    def __init__(
        self,
        k: int = 8,
        clip_eps: float = 0.2,
        ppo_epochs: int = 4,
        kl_coef: float = 0.05,
        reward: RewardFunction = CorrectLabelReward(),
        loss_type: LossType = "grpo",
        baseline: Baseline = "group",
        kl_estimator: KLEstimator = "auto",
        advantage_eps: float = 1e-6,
        kl_bias_correction: bool = False,
    ) -> None:
        super().__init__()
        check_in_range("k", k, 1 if baseline == "none" else 2)
        check_in_range("clip_eps", clip_eps, 0.0, 1.0, low_open=True, high_open=True)
        check_in_range("ppo_epochs", ppo_epochs, 1)
        check_in_range("kl_coef", kl_coef, 0.0)
        check_in_range("advantage_eps", advantage_eps, 0.0)
        for name, value, allowed in (
            ("loss_type", loss_type, LossType),
            ("baseline", baseline, Baseline),
            ("kl_estimator", kl_estimator, KLEstimator),
        ):
            if value not in allowed.__args__:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed.__args__)}.")
        self.k = k
        self.clip_eps = clip_eps
        self.ppo_epochs = ppo_epochs
        self.kl_coef = kl_coef
        self.reward = reward
        self.loss_type = loss_type
        self.baseline = baseline
        self.kl_estimator = kl_estimator
        self.advantage_eps = advantage_eps
        self.kl_bias_correction = kl_bias_correction

    def advantages(self, rewards: Tensor) -> Tensor:
        """``[B, k]`` rewards → ``[B, k]`` advantages with the configured baseline."""
        if self.baseline == "none":
            return rewards.float()
        if self.baseline == "group":
            return group_advantages(rewards, self.advantage_eps)
        return rloo_advantages(rewards)

    def wants_exact_kl(self, family_has_exact_kl: bool) -> bool:
        if self.kl_estimator == "exact" and not family_has_exact_kl:
            raise ValueError(
                "PPOLite(kl_estimator='exact') needs a model family with exact KL; use kl_estimator: k3 (or auto)."
            )
        return self.kl_coef > 0 and self.kl_estimator in ("auto", "exact") and family_has_exact_kl

    def loss(
        self,
        logps_new: Tensor,
        logps_old: Tensor,
        advantages: Tensor,
        mask: Tensor | None = None,
        reference_logps: Tensor | None = None,
        kl_exact: Tensor | None = None,
        num_tokens: Tensor | None = None,
    ) -> ObjectiveOutput:
        """Clipped surrogate plus ``kl_coef`` × KL, per token, aggregated by ``loss_type``.

        ``logps_new``/``logps_old``/``reference_logps``/``mask``: ``[B, k, T]``; ``advantages``: ``[B, k]``;
        ``kl_exact``: per-token exact KL broadcastable to ``[B, k, T]`` (used instead of an estimate when given).
        """
        if logps_new.dim() != 3 or logps_old.shape != logps_new.shape:
            raise ValueError(
                f"PPOLite.loss expects logps_new and logps_old of shape [B, k, T], got {tuple(logps_new.shape)} and {tuple(logps_old.shape)}."
            )
        if advantages.shape != logps_new.shape[:2]:
            raise ValueError(
                f"PPOLite.loss: advantages {tuple(advantages.shape)} must be [B, k] = {tuple(logps_new.shape[:2])}."
            )
        mask = torch.ones_like(logps_new, dtype=torch.bool) if mask is None else mask.bool()
        m = mask.float()
        surrogate, clipped = clipped_surrogate(logps_new, logps_old, advantages.unsqueeze(-1), self.clip_eps)
        per_token = -surrogate
        tokens = m.sum().clamp(min=1)
        # TRL's clip ratios: tokens whose ratio left the trust region on the side where clipping stops the gradient.
        ratio = (logps_new.detach().float() - logps_old.float()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO).exp()
        adv = advantages.detach().unsqueeze(-1)
        low = (ratio < 1 - self.clip_eps) & (adv < 0)
        high = (ratio > 1 + self.clip_eps) & (adv > 0)
        metrics = {
            "ppo/loss_surrogate": aggregate_token_loss(per_token.detach(), mask, self.loss_type, num_tokens),
            "ppo/clip_fraction": (clipped.float() * m).sum() / tokens,
            "ppo/clip_ratio/low_mean": (low.float() * m).sum() / tokens,
            "ppo/clip_ratio/high_mean": (high.float() * m).sum() / tokens,
            "ppo/clip_ratio/region_mean": ((low | high).float() * m).sum() / tokens,
        }
        kl = None
        if kl_exact is not None:
            kl = kl_exact.float().expand_as(logps_new)
        elif reference_logps is not None:
            if reference_logps.shape != logps_new.shape:
                raise ValueError(
                    f"PPOLite.loss: reference_logps {tuple(reference_logps.shape)} must match logps_new {tuple(logps_new.shape)}."
                )
            kl = estimated_kl(logps_new, reference_logps, "k1" if self.kl_estimator == "k1" else "k3")
            if self.kl_bias_correction:  # × the ratio (1 in value; its gradient is the correction)
                log_ratio = (logps_new.float() - logps_old.float().detach()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
                kl = kl * log_ratio.exp()
        if kl is not None:
            per_token = per_token + self.kl_coef * kl
            metrics["ppo/kl"] = (kl.detach() * m).sum() / tokens
        elif self.kl_coef > 0:
            raise ValueError(
                f"objective PPOLite (kl_coef={self.kl_coef}) needs reference log-probs; set model.reference_ckpt to a "
                "weights file (e.g. the SFT checkpoint), or set kl_coef: 0 to train without the KL penalty."
            )
        return ObjectiveOutput(aggregate_token_loss(per_token, mask, self.loss_type, num_tokens), metrics)
