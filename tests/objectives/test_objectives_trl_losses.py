"""The TRL loss types and CPO: values derived by hand (mostly at h = 0 and at each loss's optimum), gradient signs.

Inputs use a zero reference where it keeps the arithmetic readable, so r = log pi - log pi_ref is the policy
log-prob itself. No expected value below is computed by the function under test.
"""

import math

import pytest
import torch

from prefalign.objectives import (
    AOT,
    BCO,
    CPO,
    DPO,
    EXO,
    NCA,
    SFT,
    SPPO,
    WPO,
    AOTPair,
    APODown,
    APOZero,
    DiscoPOP,
    FDivergence,
    PairLogps,
    ReferenceFree,
    WeightedSum,
)


def softplus(x):  # -log sigmoid(-x) = log(1 + e^x), from the definition
    return math.log1p(math.exp(x))


def pair(pc, pr, rc=None, rr=None, grad=False, **extra):
    def t(v):
        return torch.tensor(v, dtype=torch.float32, requires_grad=grad)

    pc, pr = t(pc), t(pr)
    rc = torch.zeros_like(pc) if rc is None else t(rc).detach()
    rr = torch.zeros_like(pr) if rr is None else t(rr).detach()
    return PairLogps(pc, pr, rc, rr, **extra)


# ---------------------------------------------------------------- EXO
def test_exo_at_zero_margin_and_at_its_optimum():
    eps = 0.1
    # h = 0: q = (1/2, 1/2), KL(q || (0.9, 0.1)) = 1/2 log(0.5/0.9) + 1/2 log(0.5/0.1) = -log 2 - (log 0.9 + log 0.1) / 2
    assert EXO(beta=1.0, label_smoothing=eps)(pair([-1.0], [-1.0])).loss.item() == pytest.approx(
        -math.log(2) - 0.5 * (math.log(0.9) + math.log(0.1)), rel=1e-6
    )
    # h* = log((1 - eps) / eps) = log 9: q equals the labels, KL = 0
    assert EXO(beta=1.0, label_smoothing=eps)(pair([-0.1], [-0.1 - math.log(9)])).loss.item() == pytest.approx(
        0.0, abs=1e-6
    )
    # beta scales h: beta = 2, h = log(9) / 2 is the same point
    assert EXO(beta=2.0, label_smoothing=eps)(pair([-0.1], [-0.1 - math.log(9) / 2])).loss.item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_exo_refuses_zero_smoothing():
    with pytest.raises(ValueError, match="label_smoothing=0.0 is out of range"):
        EXO(label_smoothing=0.0)


# ---------------------------------------------------------------- NCA
def test_nca_values():
    assert NCA(beta=1.0)(pair([0.0], [0.0])).loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    # r_w = log 2: -log(2/3) - log(1/3)/2; r_l = 0: -log(1/2)/2
    expected = math.log(1.5) + 0.5 * math.log(3) + 0.5 * math.log(2)
    assert NCA(beta=1.0)(pair([-1.0 + math.log(2)], [-1.0], rc=[-1.0], rr=[-1.0])).loss.item() == pytest.approx(
        expected, rel=1e-6
    )


# ---------------------------------------------------------------- BCO
def test_bco_pair_uses_the_running_mean_of_every_reward_seen():
    bco = BCO(beta=1.0).train()
    # batch 1: rewards r_w = 1, r_l = -1 -> shift 0; loss = -log s(1) - log s(-(-1)) = 2 log(1 + e^-1)
    out = bco(pair([-1.0], [-2.0], rc=[-2.0], rr=[-1.0]))
    assert out.loss.item() == pytest.approx(2 * softplus(-1), rel=1e-6)
    # batch 2: rewards 2 and 0 -> shift = (1 - 1 + 2 + 0) / 4 = 0.5; loss = -log s(2 - 0.5) - log s(-(0 - 0.5))
    out = bco(pair([0.0], [-1.0], rc=[-2.0], rr=[-1.0]))
    assert bco.reward_shift.item() == pytest.approx(0.5)
    assert out.loss.item() == pytest.approx(softplus(-1.5) + softplus(-0.5), rel=1e-6)
    assert out.metrics["reward_shift"].item() == pytest.approx(0.5)
    # evaluation reads the shift but does not move it
    bco.eval()(pair([5.0], [5.0]))
    assert bco.reward_shift.item() == pytest.approx(0.5) and bco.reward_count.item() == 4


def test_bco_at_zero():
    assert BCO(beta=1.0)(pair([0.0], [0.0])).loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)


# ---------------------------------------------------------------- SPPO
def test_sppo_targets_plus_minus_one_over_two_beta():
    assert SPPO(beta=0.5)(pair([0.0], [0.0])).loss.item() == pytest.approx(2.0)  # 1/(2 beta^2)
    assert SPPO(beta=0.5)(pair([1.0], [-1.0])).loss.item() == pytest.approx(0.0, abs=1e-7)  # r_w = 1, r_l = -1
    assert SPPO(beta=0.5)(pair([2.0], [0.0])).loss.item() == pytest.approx(1.0 + 1.0)


# ---------------------------------------------------------------- AOT
def test_aot_pairs_the_sorted_policy_margins_with_the_sorted_reference_margins():
    # policy margins [3, -1], reference margins [0, 1]; sorted: [-1, 3] vs [0, 1] -> delta [-1, 2]
    p = pair([3.0, -1.0], [0.0, 0.0], rc=[0.0, 1.0], rr=[0.0, 0.0])
    expected = (softplus(1) + softplus(-2)) / 2  # -log s(-1) = log(1 + e), -log s(2) = log(1 + e^-2)
    assert AOT(beta=1.0)(p).loss.item() == pytest.approx(expected, rel=1e-6)
    # unsorted pairing would give delta [3, -2]: a different number
    assert expected != pytest.approx((softplus(-3) + softplus(2)) / 2)


def test_aot_pair_sorts_chosen_and_rejected_log_ratios_separately():
    # r_w = [2, -1], r_l = [0, 1]; sorted: [-1, 2] - [0, 1] = [-1, 1]
    p = pair([2.0, -1.0], [0.0, 1.0])
    assert AOTPair(beta=1.0)(p).loss.item() == pytest.approx((softplus(1) + softplus(-1)) / 2, rel=1e-6)
    # with label smoothing 0.25: each term is 0.75 * -log s(d) + 0.25 * -log s(-d)
    smoothed = (0.75 * softplus(1) + 0.25 * softplus(-1) + 0.75 * softplus(-1) + 0.25 * softplus(1)) / 2
    assert AOTPair(beta=1.0, label_smoothing=0.25)(p).loss.item() == pytest.approx(smoothed, rel=1e-6)


def test_aot_with_one_example_is_dpo():
    p = pair([-0.3], [-1.1], rc=[-0.5], rr=[-0.9])
    assert AOT(beta=0.7)(p).loss.item() == pytest.approx(DPO(beta=0.7)(p).loss.item(), rel=1e-6)


# ---------------------------------------------------------------- APO
def test_apo_values():
    assert APOZero(beta=1.0)(pair([0.0], [0.0])).loss.item() == pytest.approx(1.0)
    assert APODown(beta=1.0)(pair([0.0], [0.0])).loss.item() == pytest.approx(1.0)
    # r_w = log 3 (sigmoid 3/4), r_l = -log 3 (sigmoid 1/4), r_w - r_l = log 9 (sigmoid 9/10)
    p = pair([math.log(3)], [-math.log(3)])
    assert APOZero(beta=1.0)(p).loss.item() == pytest.approx(1 - 0.75 + 0.25, rel=1e-6)
    assert APODown(beta=1.0)(p).loss.item() == pytest.approx(0.75 + 1 - 0.9, rel=1e-6)


def test_apo_down_lowers_the_chosen_likelihood_and_apo_zero_raises_it():
    # at r_w = 0, r_l = -2: APO-down's chosen gradient is s'(0) - s'(2) > 0; APO-zero's is -s'(0) < 0
    for cls, sign in ((APOZero, -1), (APODown, 1)):
        p = pair([0.0], [-2.0], grad=True)
        cls(beta=1.0)(p).loss.backward()
        assert torch.sign(p.policy_chosen.grad).item() == sign, cls.__name__


# ---------------------------------------------------------------- DiscoPOP
def test_discopop_values():
    # h = 0: mixing weight 1/2: (log 2 + e^0) / 2
    assert DiscoPOP(beta=1.0)(pair([0.0], [0.0])).loss.item() == pytest.approx((math.log(2) + 1) / 2, rel=1e-6)
    # h = 1, tau = 0.05: weight sigmoid(20)
    m = 1 / (1 + math.exp(-20))
    assert DiscoPOP(beta=1.0, tau=0.05)(pair([1.0], [0.0])).loss.item() == pytest.approx(
        (1 - m) * softplus(-1) + m * math.exp(-1), rel=1e-6
    )
    # h = -1: weight sigmoid(-20), almost pure logistic loss
    m = 1 / (1 + math.exp(20))
    assert DiscoPOP(beta=1.0, tau=0.05)(pair([0.0], [1.0])).loss.item() == pytest.approx(
        (1 - m) * softplus(1) + m * math.e, rel=1e-6
    )


# ---------------------------------------------------------------- CPO
def test_cpo_is_reference_free_dpo_plus_nll():
    assert not CPO.needs_reference
    p = PairLogps(torch.tensor([-1.0]), torch.tensor([-2.0]), None, None)
    out = CPO(beta=1.0, alpha=1.0)(p)
    assert out.loss.item() == pytest.approx(softplus(-1) + 1.0, rel=1e-6)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(-1.0)  # beta * log pi
    assert CPO(beta=1.0, alpha=0.0)(p).loss.item() == pytest.approx(softplus(-1), rel=1e-6)


# ---------------------------------------------------------------- modifiers
def test_f_divergence_scores_through_dpo():
    # forward KL: score -e^-r; r_w = r_l = 0 -> equal scores -> log 2
    assert FDivergence(DPO(beta=1.0), "forward_kl")(pair([0.0], [0.0])).loss.item() == pytest.approx(
        math.log(2), rel=1e-6
    )
    # forward KL, r_w = 0, r_l = -log 2: scores -1 and -2 -> h = 1
    assert FDivergence(DPO(beta=1.0), "forward_kl")(pair([0.0], [-math.log(2)])).loss.item() == pytest.approx(
        softplus(-1), rel=1e-6
    )
    # Jensen-Shannon: log s(log 3) - log s(0) = log(3/4) - log(1/2) = log 1.5 -> -log s(log 1.5) = log(1 + 1/1.5)
    assert FDivergence(DPO(beta=1.0), "js_divergence")(pair([math.log(3)], [0.0])).loss.item() == pytest.approx(
        math.log(5 / 3), rel=1e-6
    )
    # alpha = 1/2: score e^{-r/2} / (-1/2); r_w = 2 log 2 -> -1, r_l = 0 -> -2: h = 1
    assert FDivergence(DPO(beta=1.0), "alpha_divergence", alpha=0.5)(
        pair([2 * math.log(2)], [0.0])
    ).loss.item() == pytest.approx(softplus(-1), rel=1e-6)
    # reverse KL is DPO itself
    p = pair([-0.3], [-1.2], rc=[-0.6], rr=[-0.8])
    assert FDivergence(DPO(beta=0.5), "reverse_kl")(p).loss.item() == pytest.approx(
        DPO(beta=0.5)(p).loss.item(), rel=1e-6
    )


def test_f_divergence_keeps_true_logps_in_metrics_and_refuses_non_log_ratio_losses():
    out = FDivergence(DPO(), "forward_kl")(pair([-0.5], [-1.5]))
    assert out.metrics["logps/chosen"].item() == pytest.approx(-0.5)
    for inner in (SFT(), CPO(), AOT()):
        with pytest.raises(ValueError, match="beyond the log-ratio"):
            FDivergence(inner)
    with pytest.raises(ValueError, match="unknown divergence"):
        FDivergence(DPO(), "hellinger")


def test_wpo_multiplies_each_pair_loss_by_its_two_weights():
    lw = dict(
        chosen_wpo_logweight=torch.log(torch.tensor([0.5, 1.0])),
        rejected_wpo_logweight=torch.log(torch.tensor([0.4, 0.5])),
    )
    # h = 0 for both pairs: loss per pair log 2; weights 0.2 and 0.5
    out = WPO(DPO(beta=1.0))(pair([-1.0, -1.0], [-1.0, -1.0], **lw))
    assert out.loss.item() == pytest.approx((0.2 + 0.5) * math.log(2) / 2, rel=1e-6)
    assert out.metrics["wpo/weight"].item() == pytest.approx(0.35)
    assert "wpo_weights" in WPO(DPO()).requires
    with pytest.raises(ValueError, match="sorted within the batch"):
        WPO(AOT())


def test_weighted_sum_adds_the_weighted_parts():
    out = WeightedSum([DPO(beta=1.0), SPPO(beta=0.5)], weights=[1.0, 0.5])(pair([-1.0], [-1.0], rc=[-1.0], rr=[-1.0]))
    assert out.loss.item() == pytest.approx(math.log(2) + 0.5 * 2.0, rel=1e-6)  # SPPO at r = 0: 1/(2 beta^2) = 2
    assert out.metrics["loss/DPO"].item() == pytest.approx(math.log(2)) and out.metrics[
        "loss/SPPO"
    ].item() == pytest.approx(2.0)
    assert "rewards/margins" in out.metrics  # the first part's metrics keep their names
    names = WeightedSum([DPO(), DPO(beta=0.5)])(pair([-1.0], [-2.0])).metrics
    assert "loss/DPO_1" in names and "loss/DPO_2" in names
    with pytest.raises(ValueError, match="one weight per objective"):
        WeightedSum([DPO(), SFT()], weights=[1.0])
    with pytest.raises(ValueError, match="length_normalized"):  # SFT wants mean token log-probs, DPO sums
        WeightedSum([DPO(), SFT()])


def test_reference_free_drops_the_reference():
    p = pair([-1.0], [-2.0], rc=[-5.0], rr=[-0.1])  # the reference is ignored
    out = ReferenceFree(DPO(beta=1.0))(p)
    assert out.loss.item() == pytest.approx(softplus(-1), rel=1e-6)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(-1.0)  # beta * log pi
    assert not ReferenceFree(DPO()).needs_reference
    with pytest.raises(ValueError, match="already needs none"):
        ReferenceFree(SFT())


# ---------------------------------------------------------------- following the gradient raises the margin
MARGIN_RAISERS = [
    DPO(beta=1.0),
    EXO(beta=1.0),
    NCA(beta=1.0),
    BCO(beta=1.0).eval(),
    SPPO(beta=1.0),
    AOT(beta=1.0),
    AOTPair(beta=1.0),
    APOZero(beta=1.0),
    APODown(beta=1.0),
    DiscoPOP(beta=1.0),
    CPO(beta=1.0),
    FDivergence(DPO(beta=1.0), "js_divergence"),
    ReferenceFree(DPO(beta=1.0)),
    WeightedSum([DPO(beta=1.0), NCA(beta=1.0)]),
]


@pytest.mark.parametrize("objective", MARGIN_RAISERS, ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("point", [(0.0, 0.0), (-0.3, -0.1), (-0.2, -0.6)])
def test_a_gradient_step_raises_the_chosen_minus_rejected_margin(objective, point):
    if isinstance(objective, DiscoPOP) and point == (0.0, 0.0):
        pytest.skip("DiscoPOP is not monotone at h = 0: see test_discopop_pushes_the_margin_down_at_zero")
    p = pair([point[0] - 1.0], [point[1] - 1.0], rc=[-1.0], rr=[-1.0], grad=True)
    objective(p).loss.backward()
    # d(margin)/d(step) along -grad = -(g_chosen - g_rejected) > 0
    assert (p.policy_rejected.grad - p.policy_chosen.grad).item() > 0


def test_discopop_pushes_the_margin_down_at_zero():
    # dL/dz at z = 0 with m = sigmoid(z / tau): m' = 1 / (4 tau); dL/dz = -m' log 2 - (1 - m) / 2 + m' - m = (1 - log 2) / (4 tau) - 3/4
    tau = 0.05
    p = pair([-1.0], [-1.0], rc=[-1.0], rr=[-1.0], grad=True)
    DiscoPOP(beta=1.0, tau=tau)(p).loss.backward()
    slope = (1 - math.log(2)) / (4 * tau) - 0.75
    assert p.policy_chosen.grad.item() == pytest.approx(
        slope, rel=1e-5
    ) and p.policy_rejected.grad.item() == pytest.approx(-slope, rel=1e-5)
    assert slope > 0  # a gradient step lowers the margin here; with tau >= (1 - log 2) / 3 it would not
