"""DPO, cDPO, robust DPO, IPO, hinge and RPO against hand-computed values.

Shared example: pc=-0.5, pr=-1.2, rc=-0.7, rr=-1.0, so h = (pc-rc) - (pr-rr) = 0.2 - (-0.2) = 0.4.
"""

import math

import pytest
import torch

from prefalign.objectives import DPO, IPO, RPO, Hinge, PairLogps, RobustDPO, dpo_loss, robust_dpo_loss

PC, PR, RC, RR = -0.5, -1.2, -0.7, -1.0
H = 0.4


def softplus(x: float) -> float:  # -log(sigmoid(-x))
    return math.log1p(math.exp(x))


def pair(pc=PC, pr=PR, rc=RC, rr=RR, grad=False) -> PairLogps:
    t = lambda v: torch.tensor([v] if isinstance(v, float) else v, requires_grad=grad)  # noqa: E731
    return PairLogps(t(pc), t(pr), t(rc), t(rr))


def test_dpo_hand_value():
    out = DPO(beta=0.1)(pair())
    # -log(sigmoid(0.1 * 0.4)) = log(1 + e^-0.04)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.04)), rel=1e-6)
    assert out.loss.item() == pytest.approx(0.6733471672, rel=1e-6)
    assert out.loss.dim() == 0


def test_cdpo_hand_value_and_eps0_is_dpo():
    out = DPO(beta=0.1, label_smoothing=0.1)(pair())
    expected = 0.9 * softplus(-0.04) + 0.1 * softplus(0.04)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.6773471672, rel=1e-6)
    assert DPO(0.3, label_smoothing=0.0)(pair()).loss.item() == pytest.approx(DPO(0.3)(pair()).loss.item())


def test_robust_dpo_hand_value():
    out = RobustDPO(beta=0.1, label_smoothing=0.1)(pair())
    expected = (0.9 * softplus(-0.04) - 0.1 * softplus(0.04)) / 0.8
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.6683471672, rel=1e-6)
    assert RobustDPO(0.1, 0.0)(pair()).loss.item() == pytest.approx(DPO(0.1)(pair()).loss.item())


@pytest.mark.parametrize("eps", [0.5, 0.7, -0.1])
def test_robust_dpo_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        RobustDPO(beta=0.1, label_smoothing=eps)
    if eps >= 0.5:
        with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
            robust_dpo_loss(*[torch.zeros(2)] * 4, beta=0.1, label_smoothing=eps)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="beta"):
        DPO(beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPO(label_smoothing=0.6)
    with pytest.raises(ValueError, match="tau"):
        IPO(tau=-1.0)


def test_ipo_hand_value():
    out = IPO(tau=0.1)(pair())
    assert out.loss.item() == pytest.approx((0.4 - 1 / (2 * 0.1)) ** 2, rel=1e-6)  # (0.4 - 5)^2
    assert out.loss.item() == pytest.approx(21.16, rel=1e-6)
    # TRL convention: the reward metric uses beta = tau
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.1 * 0.2, rel=1e-5)


def test_hinge_hand_value_and_inactive_margin():
    assert Hinge(beta=0.1)(pair()).loss.item() == pytest.approx(1 - 0.1 * 0.4, rel=1e-6)  # 0.96
    p = pair(grad=True)
    out = Hinge(beta=5.0)(p)  # 1 - 5 * 0.4 = -1 -> relu = 0, and no gradient
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert p.policy_chosen.grad.abs().sum().item() == 0.0


def test_rpo_hand_value_and_alpha0_is_dpo():
    out = RPO(beta=0.1, alpha=1.0)(pair())
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.04)) + 0.5, rel=1e-6)
    assert out.metrics["nll"].item() == pytest.approx(0.5)
    assert RPO(beta=0.1, alpha=0.0)(pair()).loss.item() == pytest.approx(DPO(beta=0.1)(pair()).loss.item())


def test_rpo_token_mean_is_trl_sft_term_over_the_batch_tokens():
    # Two examples with summed chosen log-probs -3 and -1 over 3 and 1 tokens: TRL's sft term is (3 + 1) / (3 + 1) = 1,
    # the per-response sum would be (3 + 1) / 2 = 2. The DPO term sees the true log-probs either way (h = 0: ln 2).
    logps = PairLogps(
        policy_chosen=torch.tensor([-3.0, -1.0]),
        policy_rejected=torch.tensor([-2.0, -2.0]),
        reference_chosen=torch.tensor([-3.0, -1.0]),
        reference_rejected=torch.tensor([-2.0, -2.0]),
        chosen_length=torch.tensor([3, 1]),
        rejected_length=torch.tensor([2, 2]),
    )
    mean = RPO(beta=0.1, alpha=0.5, nll="token_mean")
    assert "token_lengths" in mean.requires
    assert "token_lengths" not in RPO().requires
    assert mean(logps).loss.item() == pytest.approx(math.log(2) + 0.5 * 1.0, rel=1e-6)
    assert mean(logps).metrics["nll"].item() == pytest.approx(1.0)
    assert RPO(beta=0.1, alpha=0.5)(logps).loss.item() == pytest.approx(math.log(2) + 0.5 * 2.0, rel=1e-6)
    with pytest.raises(ValueError, match="token_mean"):
        RPO(nll="tokens")


def test_dpo_gradient_direction_and_value():
    p = pair(grad=True)
    DPO(beta=0.1)(p).loss.backward()
    # dL/dpc = -beta * sigmoid(-beta h): descent raises pc and lowers pr; the reference gets the opposite sign.
    g = 0.1 / (1 + math.exp(0.04))
    assert p.policy_chosen.grad.item() == pytest.approx(-g, rel=1e-5)
    assert p.policy_rejected.grad.item() == pytest.approx(g, rel=1e-5)


def test_batch_reduction_is_mean_of_per_example():
    torch.manual_seed(0)
    pc, pr, rc, rr = (-torch.rand(6) * 3 for _ in range(4))
    out = DPO(beta=0.5)(PairLogps(pc, pr, rc, rr))
    assert out.loss.item() == pytest.approx(dpo_loss(pc, pr, rc, rr, 0.5).mean().item(), rel=1e-6)
    assert dpo_loss(pc, pr, rc, rr, 0.5).shape == (6,)


def test_dpo_metrics():
    p = PairLogps(
        torch.tensor([-0.5, -2.0]), torch.tensor([-1.2, -0.5]), torch.tensor([-0.7, -1.0]), torch.tensor([-1.0, -1.0])
    )
    m = DPO(beta=0.1)(p).metrics
    # chosen rewards 0.1*[0.2, -1.0], rejected 0.1*[-0.2, 0.5]
    assert m["rewards/chosen"].item() == pytest.approx(-0.04, abs=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(0.015, abs=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(-0.055, abs=1e-6)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)
    assert m["logps/chosen"].item() == pytest.approx(-1.25)
    assert m["logps/rejected"].item() == pytest.approx(-0.85)
