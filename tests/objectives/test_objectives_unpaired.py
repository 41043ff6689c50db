"""KTO and BCO on unpaired responses (each flagged desirable or undesirable): hand values; others refuse such batches."""

import math

import pytest
import torch

from prefalign.objectives import BCO, DPO, KTO, PairLogps


def single(policy, reference, desirable, kl=None):
    return PairLogps(
        torch.tensor(policy),
        None,
        torch.tensor(reference),
        None,
        kl=None if kl is None else torch.tensor(kl),
        desirable=torch.tensor(desirable),
    )


def test_kto_unpaired_values():
    # z0 = mean KL = 0; r = [log 3, log 3, 0]; desirable: 1 - s(log 3) = 1/4; undesirable: 1 - s(-log 3) = 3/4; r = 0: 1/2
    lp = single([math.log(3) - 1, math.log(3) - 1, -1.0], [-1.0, -1.0, -1.0], [True, False, True], kl=[0.0, 0.0, 0.0])
    out = KTO(beta=1.0)(lp)
    assert out.loss.item() == pytest.approx((0.25 + 0.75 + 0.5) / 3, rel=1e-6)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(math.log(3) / 2)  # mean beta*r over desirable
    assert out.metrics["rewards/rejected"].item() == pytest.approx(math.log(3))
    # weights scale each side
    out = KTO(beta=1.0, desirable_weight=2.0, undesirable_weight=0.0)(lp)
    assert out.loss.item() == pytest.approx((2 * 0.25 + 0 + 2 * 0.5) / 3, rel=1e-6)


def test_kto_unpaired_reference_point_without_kl_is_the_mean_log_ratio_clamped():
    # r = [2, 0]: z0 = 1; desirable r = 2: 1 - s(1); undesirable r = 0: 1 - s(1)
    lp = single([1.0, -1.0], [-1.0, -1.0], [True, False])
    out = KTO(beta=1.0)(lp)
    assert out.metrics["kl"].item() == pytest.approx(1.0)
    assert out.loss.item() == pytest.approx(1 - 1 / (1 + math.exp(-1)), rel=1e-6)


def test_bco_unpaired_values_and_shift():
    bco = BCO(beta=1.0).train()
    # rewards [1, -1] -> shift 0: -log s(1) for the desirable, -log s(-(-1)) for the undesirable
    out = bco(single([0.0, -2.0], [-1.0, -1.0], [True, False]))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)
    # rewards [3, 1] -> shift (1 - 1 + 3 + 1) / 4 = 1: desirable -log s(3 - 1), undesirable -log s(-(1 - 1))
    out = bco(single([2.0, 0.0], [-1.0, -1.0], [True, False]))
    assert bco.reward_shift.item() == pytest.approx(1.0)
    assert out.loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2, rel=1e-6)


def test_pair_objectives_refuse_unpaired_batches():
    with pytest.raises(ValueError, match="only KTO and BCO take unpaired data"):
        DPO()(single([-1.0], [-1.0], [True]))


def test_gradients_push_desirable_up_and_undesirable_down():
    for objective in (KTO(beta=1.0), BCO(beta=1.0).eval()):
        policy = torch.tensor([-1.0, -1.0], requires_grad=True)
        lp = PairLogps(
            policy, None, torch.tensor([-1.0, -1.0]), None, kl=torch.zeros(2), desirable=torch.tensor([True, False])
        )
        objective(lp).loss.backward()
        assert policy.grad[0] < 0 < policy.grad[1], type(objective).__name__
