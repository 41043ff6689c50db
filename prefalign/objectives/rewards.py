"""Reward functions for PPO-lite: score the k responses sampled per prompt.

A reward reads a :class:`~prefalign.families.base.Rollout`: the prompts' batch (inputs, labels, ...) and the
sampled ``responses [B, k, T]`` with their ``mask``; it returns float rewards ``[B, k]``. The two below are for
one-label responses (the classifier family: ``responses[..., 0]`` is the sampled class); other families ship
their own beside their code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class RewardFunction(nn.Module):
    """Maps a rollout (``batch``, ``responses [B, k, T]``, ``mask``) to float rewards ``[B, k]``.

    ``setup(module, datamodule)`` runs once before training (after the model family's own setup): a reward that
    needs the data (a word list) or the family (a tokenizer) takes them there. A reward may add scalars to the
    rollout's ``metrics`` (logged with the step)."""

    def check_config(self, policy: Any, datamodule: Any) -> None:
        """Refuse a reward that cannot work with this model and data; the CLI calls it before the trainer starts
        (after the family's ``check_config``), so a bad reward stops with one line and nothing written."""

    def setup(self, module: Any, datamodule: Any) -> None:
        pass

    def forward(self, rollout: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _labels(rollout: Any) -> Tensor:
    return rollout.responses[..., 0]


class CorrectLabelReward(RewardFunction):
    r"""The verifiable reward :math:`r(x, y) = \mathbb{1}[y = y^*]`: 1.0 for the true label (``batch["y"]``), 0.0 otherwise."""

    def forward(self, rollout: Any) -> Tensor:
        return (_labels(rollout) == rollout.batch["y"].unsqueeze(1)).float()


class RewardModelConfidence(RewardFunction):
    r"""A learned reward: :math:`r(x, y) = p_{RM}(y|x)`, the probability a frozen reward model gives the sampled label.

    The reward model is loaded lazily from ``ckpt`` (a prefalign weights file) on first call, in eval mode
    with gradients off. It is kept in a plain attribute, not a submodule, so it never appears in
    ``parameters()``/``state_dict()``: the optimiser cannot train it, DDP does not wrap it, and policy
    checkpoints do not carry it. It is moved to the device of the inputs (``batch["x"]``) on each call.

    Args:
        ckpt: path of the reward model's weights file.
    """

    def __init__(self, ckpt: str) -> None:
        super().__init__()
        self.ckpt = ckpt
        # object.__setattr__ bypasses nn.Module's registration of submodules (see class docstring).
        object.__setattr__(self, "_reward_model", None)

    @property
    def reward_model(self) -> nn.Module:
        if self._reward_model is None:
            from prefalign.models.loading import load_model  # lazy: keeps config parsing free of file access

            model = load_model(self.ckpt).eval().requires_grad_(False)
            object.__setattr__(self, "_reward_model", model)
        return self._reward_model

    def forward(self, rollout: Any) -> Tensor:
        x = rollout.batch["x"]
        model = self.reward_model.to(x.device)
        with torch.no_grad():
            probs = model(x.float()).float().softmax(dim=-1)
        return probs.gather(1, _labels(rollout).long())
