"""SFT, SimPO and ORPO: no reference model."""

import math

import pytest
import torch

from prefalign.objectives import ORPO, SFT, PairLogps, SimPO, log1mexp, log_odds


def free_pair(pc, pr, grad=False) -> PairLogps:
    return PairLogps(torch.tensor(pc, requires_grad=grad), torch.tensor(pr, requires_grad=grad), None, None)


def test_sft_hand_value_without_rejected():
    out = SFT()(PairLogps(torch.tensor([-0.5, -1.5]), None, None, None))
    assert out.loss.item() == pytest.approx(1.0)
    assert out.metrics["nll"].item() == pytest.approx(1.0)
    assert out.metrics["logps/chosen"].item() == pytest.approx(-1.0)
    assert "rewards/accuracies" not in out.metrics


def test_sft_implicit_rewards_with_rejected():
    m = SFT()(free_pair([-0.5, -1.5], [-1.0, -1.0])).metrics
    assert m["rewards/chosen"].item() == pytest.approx(-1.0)  # reward = logp (scale 1)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)


def test_simpo_hand_value_and_metrics():
    out = SimPO(beta=2.0, gamma=0.5)(free_pair([-0.5], [-1.2]))
    # -log sigmoid(2*(-0.5) - 2*(-1.2) - 0.5) = -log sigmoid(0.9)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.9)), rel=1e-6)
    assert out.loss.item() == pytest.approx(0.3411538747, rel=1e-6)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(-1.0)  # beta * logp
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-2.4)
    assert out.metrics["rewards/accuracies"].item() == 1.0


def test_simpo_gradient_direction():
    p = free_pair([-0.5, -2.0], [-1.2, -0.3], grad=True)
    SimPO()(p).loss.backward()
    assert (p.policy_chosen.grad < 0).all() and (p.policy_rejected.grad > 0).all()


def test_orpo_hand_value_and_metrics():
    def logodds(a):  # log(p / (1 - p)) with p = e^a, directly from the definition
        p = math.exp(a)
        return math.log(p / (1 - p))

    ratio = logodds(-0.5) - logodds(-1.2)
    out = ORPO(lam=0.1)(free_pair([-0.5], [-1.2]))
    assert ratio == pytest.approx(1.2743697117, rel=1e-8)
    assert out.loss.item() == pytest.approx(0.5 + 0.1 * math.log1p(math.exp(-ratio)), rel=1e-6)
    assert out.loss.item() == pytest.approx(0.5246553113, rel=1e-6)
    assert out.metrics["nll"].item() == pytest.approx(0.5)
    assert out.metrics["log_odds_chosen"].item() == pytest.approx(ratio, rel=1e-5)
    assert out.metrics["log_odds_ratio"].item() == pytest.approx(-math.log1p(math.exp(-ratio)), rel=1e-5)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(-0.05)  # lam * logp, as TRL


def test_orpo_gradient_direction():
    p = free_pair([-0.5, -2.0], [-1.2, -0.3], grad=True)
    ORPO(lam=1.0)(p).loss.backward()
    assert (p.policy_chosen.grad < 0).all() and (p.policy_rejected.grad > 0).all()


def test_log1mexp_both_branches():
    a = torch.tensor([-1e-6, -0.1, -0.69, -0.7, -5.0, -50.0])
    # fp64 reference; log1p(-exp(a)) in the tail, where log(-expm1(a)) rounds to 0 even in fp64
    expected = torch.tensor([math.log(-math.expm1(v)) if v > -0.5 else math.log1p(-math.exp(v)) for v in a.tolist()])
    assert torch.allclose(log1mexp(a), expected, rtol=1e-5, atol=1e-30)
    assert log_odds(torch.tensor([math.log(0.5)])).abs().item() < 1e-6  # p = 1/2 -> even odds


def test_reference_free_objectives_accept_missing_reference():
    p = free_pair([-0.5], [-1.2])
    for obj in (SFT(), SimPO(), ORPO()):
        assert torch.isfinite(obj(p).loss)
