"""One PPO-lite step for any model family: roll out, score, then ``ppo_epochs`` clipped updates (manual optimisation)."""

from __future__ import annotations

from typing import Any

import torch

from prefalign.objectives import PPOLite, exact_kl


def ppo_step(module: Any, batch: dict[str, torch.Tensor]) -> None:
    """Sample k responses per prompt with the current policy, reward them, and update the policy on them.

    The rollout, the rewards, the advantages and the reference's log-probs are computed once per batch under
    ``no_grad`` (the old log-probs too, unless one update per rollout makes them the update's own); each of the
    ``ppo_epochs`` inner passes re-scores the same responses with the policy, so only the policy's forward and
    backward repeat. The KL is exact when the family gives full distributions and the
    objective asks for it (classifier, small vocabularies), otherwise estimated from the sampled tokens.
    """
    objective: PPOLite = module.objective
    family = module.family
    optimizer = module.optimizers()
    reference = module.reference if objective.kl_coef > 0 else None
    exact = reference is not None and objective.wants_exact_kl("exact_kl" in family.capabilities)
    # With one update per rollout the old log-probs are the update's own, detached (TRL's on-policy shortcut): a family
    # whose sampling does not give them for free (``sample``: generation) skips the scoring forward pass it would need.
    on_policy = objective.ppo_epochs == 1 and hasattr(family, "sample")
    with torch.no_grad():
        sample = family.sample if on_policy else family.rollout
        rollout = sample(module.policy_forward, batch, objective.k)
        rewards = objective.reward(rollout)
        advantages = objective.advantages(rewards)
        ref = family.response_logps(reference, rollout) if reference is not None else None
        num_tokens = None
        if objective.loss_type == "dapo":
            num_tokens = module.trainer.strategy.reduce(rollout.mask.sum().float(), reduce_op="sum")
    out = None
    for _ in range(objective.ppo_epochs):
        new = family.response_logps(module.policy_forward, rollout)
        if on_policy:
            rollout.old_logps = new.tokens.detach()
        kl = exact_kl(new.dist, ref.dist) if exact else None
        out = objective.loss(
            new.tokens,
            rollout.old_logps,
            advantages,
            rollout.mask,
            ref.tokens if ref is not None else None,
            kl,
            num_tokens,
        )
        loss = module.guard(out.loss)
        if loss is None:
            continue
        optimizer.zero_grad()
        module.manual_backward(loss)
        optimizer.step()
    show, write = module.train_logging()
    if show or write:
        module.log("train/loss", out.loss.detach(), prog_bar=show)
        module.log("ppo/reward_mean", rewards.nanmean(), prog_bar=show)
    if write:
        names = family.metric_names
        metrics = {names.get(k, k): v for k, v in out.metrics.items()}
        module.log_dict({k if k.startswith("ppo/") else f"train/{k}": v for k, v in metrics.items()})
        if rollout.metrics:  # what the family and the reward measured on the rollout (lengths, per-function rewards)
            module.log_dict({f"train/{k}": v for k, v in rollout.metrics.items()})
