"""KTO: hand values with and without the exact KL reference point."""

import math

import pytest
import torch

from prefalign.objectives import KTO, PairLogps, kto_reference_point


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def pair(kl=None, grad=False) -> PairLogps:
    t = lambda v: torch.tensor(v, requires_grad=grad)  # noqa: E731
    # chosen log-ratio +0.2, rejected log-ratio -0.2
    return PairLogps(t([-0.5]), t([-1.2]), t([-0.7]), t([-1.0]), kl=None if kl is None else torch.tensor(kl))


def test_kto_with_exact_kl():
    out = KTO(beta=0.1)(pair(kl=[0.2]))
    # z0 = 0.2; desirable 1 - sigmoid(0.1*(0.2-0.2)) = 0.5; undesirable 1 - sigmoid(0.1*(0.2+0.2)); mean over the 2 examples
    assert out.loss.item() == pytest.approx((0.5 + 1 - sigmoid(0.04)) / 2, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.4950006666, rel=1e-6)
    assert out.metrics["kl"].item() == pytest.approx(0.2)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.02, rel=1e-5)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-0.02, rel=1e-5)


def test_kto_weights():
    out = KTO(beta=0.1, desirable_weight=2.0, undesirable_weight=1.0)(pair(kl=[0.2]))
    assert out.loss.item() == pytest.approx((2 * 0.5 + 1 - sigmoid(0.04)) / 2, rel=1e-6)


def test_kto_batch_estimate_without_kl():
    out = KTO(beta=0.1)(pair())
    # z0 = mean(0.2, -0.2) = 0 -> both terms are 1 - sigmoid(0.1*0.2)
    assert out.metrics["kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert out.loss.item() == pytest.approx(1 - sigmoid(0.02), rel=1e-6)


def test_kto_reference_point_is_clamped_and_detached():
    pc = torch.tensor([-2.0, -3.0], requires_grad=True)
    z0 = kto_reference_point(pc, torch.tensor([-3.0, -3.0]), torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0]))
    assert z0.item() == 0.0 and not z0.requires_grad
    assert kto_reference_point(pc, pc, pc, pc, kl=torch.tensor([0.1, 0.3])).item() == pytest.approx(0.2)


def test_kto_gradient_direction():
    p = pair(kl=[0.05], grad=True)
    KTO()(p).loss.backward()
    assert p.policy_chosen.grad.item() < 0 < p.policy_rejected.grad.item()
