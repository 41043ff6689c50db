"""Reward functions for PPO-lite."""

import torch

from prefalign.checkpoint import save_weights
from prefalign.families.base import Rollout
from prefalign.models import SeedCNN
from prefalign.objectives import CorrectLabelReward, PPOLite, RewardModelConfidence


def label_rollout(x: torch.Tensor, samples: torch.Tensor, labels: torch.Tensor) -> Rollout:
    """A classifier rollout: k one-label responses per image."""
    responses = samples.unsqueeze(-1)
    return Rollout(
        {"x": x, "y": labels}, responses, torch.ones_like(responses, dtype=torch.bool), torch.zeros(responses.shape)
    )


def test_correct_label_reward():
    samples = torch.tensor([[1, 2, 1], [0, 0, 3]])
    r = CorrectLabelReward()(label_rollout(torch.zeros(2, 1, 28, 28), samples, torch.tensor([1, 3])))
    assert r.dtype == torch.float32
    assert torch.equal(r, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))


def test_reward_model_confidence(tmp_path):
    torch.manual_seed(0)
    rm = SeedCNN(channels=2)
    path = save_weights(rm, tmp_path / "rm.pt")
    reward = RewardModelConfidence(str(path))
    ppo = PPOLite(k=3, reward=reward)
    assert reward._reward_model is None  # lazy: nothing loaded before the first call

    x = torch.rand(2, 1, 28, 28)
    samples = torch.tensor([[0, 3, 9], [1, 1, 5]])
    r = reward(label_rollout(x, samples, torch.tensor([0, 1])))
    expected = rm.eval()(x).softmax(-1).gather(1, samples)
    assert r.shape == (2, 3) and not r.requires_grad
    assert torch.allclose(r, expected, atol=1e-6)

    # The frozen reward model never becomes trainable or part of a checkpoint.
    assert list(reward.parameters()) == [] and list(ppo.parameters()) == []
    assert len(reward.state_dict()) == 0 and len(ppo.state_dict()) == 0
    ppo.train()
    assert not reward.reward_model.training
    assert not any(p.requires_grad for p in reward.reward_model.parameters())
