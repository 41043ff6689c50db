"""PPO-lite pieces: group advantages, clipped surrogate, exact KL, sampling and the combined loss."""

import math

import pytest
import torch

from prefalign.objectives import (
    CorrectLabelReward,
    PPOLite,
    aggregate_token_loss,
    estimated_kl,
    exact_kl,
    gather_logps,
    group_advantages,
    ppo_clip_loss,
    rloo_advantages,
)


def test_group_advantages_hand_example():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    a = group_advantages(r, eps=0.0)
    # row 0: mean 0.5, unbiased std sqrt(1/3); row 2: mean 0.25, unbiased std sqrt(0.75/3) = 0.5
    s = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([[s, -s, -s, s], [0.0, 0.0, 0.0, 0.0], [-0.5, -0.5, -0.5, 1.5]])
    assert torch.allclose(a, expected, atol=1e-6)
    assert torch.equal(a[1], torch.zeros(4))  # exactly zero, not rounding noise


def test_group_advantages_zero_variance_with_inexact_floats_and_k1():
    r = torch.full((2, 3), 0.1 + 0.2)
    assert torch.equal(group_advantages(r), torch.zeros(2, 3))
    assert torch.equal(group_advantages(torch.tensor([[0.7], [0.1]])), torch.zeros(2, 1))


def clip_example():
    # ratios [1.5, 0.5, 1.1, 1.5] against old probability 0.2
    old = torch.log(torch.full((1, 4), 0.2))
    new = torch.log(torch.tensor([[0.3, 0.1, 0.22, 0.3]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    return new, old, adv


def test_ppo_clip_loss_hand_example():
    new, old, adv = clip_example()
    new.requires_grad_(True)
    loss, clip_fraction = ppo_clip_loss(new, old, adv, clip_eps=0.2)
    # min(1.5, 1.2)=1.2 (clipped), min(0.5, 0.8)=0.5, min(-1.1, -1.1)=-1.1, min(-1.5, -1.2)=-1.5 -> -mean = 0.225
    assert loss.item() == pytest.approx(0.225, rel=1e-5)
    assert clip_fraction.item() == pytest.approx(0.75)  # |ratio-1| = [0.5, 0.5, 0.1, 0.5] > 0.2
    loss.backward()
    # d(-mean(rho*A))/dlogp = -rho*A/4 where unclipped; the clipped term has no gradient
    assert torch.allclose(new.grad, torch.tensor([[0.0, -0.125, 0.275, 0.375]]), atol=1e-6)


def test_ppo_clip_loss_on_policy_is_minus_mean_advantage():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    adv = torch.tensor([[1.0, -2.0, 0.5]])
    loss, clip_fraction = ppo_clip_loss(logp, logp, adv)
    assert loss.item() == pytest.approx(0.5 / 3, rel=1e-6) and clip_fraction.item() == 0.0


def test_ppo_clip_loss_finite_for_extreme_ratio():
    new = torch.tensor([[0.0, -200.0]], requires_grad=True)
    loss, _ = ppo_clip_loss(new, torch.tensor([[-200.0, 0.0]]), torch.tensor([[-1.0, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(new.grad).all()


def test_exact_kl():
    p = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    kl = exact_kl(p, q)
    assert kl[0].item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)  # 0.1308...
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)
    lp = torch.randn(5, 10).log_softmax(-1)
    assert torch.allclose(exact_kl(lp, lp), torch.zeros(5), atol=1e-6)
    assert (exact_kl(lp, torch.randn(5, 10).log_softmax(-1)) >= 0).all()


def test_ppolite_loss_hand_example():
    # Four one-label responses of one image (T = 1): the classifier case.
    new, old, adv = clip_example()
    full = torch.log(torch.tensor([[0.3, 0.1, 0.22, 0.38]])).requires_grad_(True)
    samples = torch.tensor([[0, 1, 2, 0]])
    assert torch.allclose(gather_logps(full, samples), new)
    ref = torch.log(torch.full((1, 4), 0.25))
    kl_exact = exact_kl(full, ref)[:, None, None]  # one distribution per image, shared by its k samples
    out = PPOLite(k=4, clip_eps=0.2, kl_coef=0.05).loss(
        gather_logps(full, samples).unsqueeze(-1), old.unsqueeze(-1), adv, kl_exact=kl_exact
    )
    kl = sum(p * math.log(p / 0.25) for p in (0.3, 0.1, 0.22, 0.38))
    assert out.loss.item() == pytest.approx(0.225 + 0.05 * kl, rel=1e-5)
    assert out.metrics["ppo/kl"].item() == pytest.approx(kl, rel=1e-5)
    assert out.metrics["ppo/loss_surrogate"].item() == pytest.approx(0.225, rel=1e-5)
    assert out.metrics["ppo/clip_fraction"].item() == pytest.approx(0.75)
    out.loss.backward()
    assert torch.isfinite(full.grad).all()


def test_ppolite_reference_rules():
    new, old, adv = clip_example()
    new3, old3 = new.unsqueeze(-1), old.unsqueeze(-1)
    with pytest.raises(ValueError, match="needs reference log-probs.*reference_ckpt.*kl_coef: 0"):
        PPOLite(k=4, kl_coef=0.05).loss(new3, old3, adv)
    out = PPOLite(k=4, kl_coef=0.0).loss(new3, old3, adv)
    assert "ppo/kl" not in out.metrics and out.loss.item() == pytest.approx(0.225, rel=1e-5)
    with pytest.raises(ValueError, match="must be \\[B, k\\]"):
        PPOLite(k=4).loss(new3, old3, adv[:, :3], reference_logps=new3)
    with pytest.raises(ValueError, match="exact KL"):
        PPOLite(kl_estimator="exact").wants_exact_kl(False)


def test_rloo_advantages_hand_example():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]])
    # A_j = r_j - mean of the other three
    expected = torch.tensor([[1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3], [3 - 5 / 3, 1 - 7 / 3, 0.0, 0.0]])
    assert torch.allclose(rloo_advantages(r), expected, atol=1e-6)
    assert torch.allclose(PPOLite(baseline="rloo").advantages(r), expected, atol=1e-6)
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.ones(3, 1))


def test_token_aggregation_hand_example():
    # Two responses: lengths 1 and 3 (mask), per-token losses chosen by hand.
    loss = torch.tensor([[[2.0, 9.0, 9.0], [1.0, 3.0, 5.0]]])  # [B=1, k=2, T=3]
    mask = torch.tensor([[[True, False, False], [True, True, True]]])
    assert aggregate_token_loss(loss, mask, "grpo").item() == pytest.approx((2.0 + 3.0) / 2)  # means 2 and 3
    assert aggregate_token_loss(loss, mask, "bnpo").item() == pytest.approx(11.0 / 4)
    assert aggregate_token_loss(loss, mask, "dapo", num_tokens=torch.tensor(8.0)).item() == pytest.approx(11.0 / 8)
    assert aggregate_token_loss(loss, mask, "dr_grpo").item() == pytest.approx(11.0 / (2 * 3))
    with pytest.raises(ValueError, match="unknown loss_type"):
        aggregate_token_loss(loss, mask, "mean")


def test_kl_estimators_hand_values():
    pol, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    d = math.log(0.5)  # log ref - log pol
    assert estimated_kl(pol, ref, "k1").item() == pytest.approx(-d)
    assert estimated_kl(pol, ref, "k3").item() == pytest.approx(math.exp(d) - d - 1)
    assert estimated_kl(pol, pol, "k3").item() == 0.0


def test_ppolite_sequence_loss_with_k3_kl_and_mask():
    # On-policy (ratio 1): surrogate per token = A; padding must not count.
    new = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.9]]])).requires_grad_(True)
    mask = torch.tensor([[[True, True], [True, False]]])
    ref = torch.log(torch.tensor([[[0.25, 0.5], [0.25, 0.1]]]))
    adv = torch.tensor([[1.0, -1.0]])
    out = PPOLite(k=2, kl_coef=0.1, loss_type="grpo").loss(new, new.detach(), adv, mask, reference_logps=ref)
    d = math.log(0.5)
    k3 = math.exp(d) - d - 1  # only the first token of response 0 differs from the reference
    # response 0 (A = 1): mean of its two tokens' (-1 + 0.1·KL); response 1 (A = -1): its one real token, +1
    expected = (((-1.0 + 0.1 * k3) + (-1.0)) / 2 + 1.0) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.metrics["ppo/kl"].item() == pytest.approx(k3 / 3, rel=1e-5)


def test_ppolite_hyperparameters():
    ppo = PPOLite()
    assert (ppo.k, ppo.clip_eps, ppo.ppo_epochs, ppo.kl_coef) == (8, 0.2, 4, 0.05)
    assert isinstance(ppo.reward, CorrectLabelReward) and PPOLite.needs_reference
    for bad in (
        {"k": 1},
        {"clip_eps": 0.0},
        {"ppo_epochs": 0},
        {"kl_coef": -0.1},
        {"loss_type": "sum"},
        {"baseline": "critic"},
        {"kl_estimator": "k2"},
    ):
        with pytest.raises(ValueError):
            PPOLite(**bad)


def test_group_advantages_leave_nan_rewards_out_of_their_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0, math.nan], [1.0, 2.0, 3.0, 4.0], [math.nan] * 4, [2.0, 2.0, math.nan, 2.0]])
    got = group_advantages(rewards, eps=1e-4)
    torch.testing.assert_close(got[0], torch.tensor([-1 / 1.0001, 0.0, 1 / 1.0001, 0.0]))  # mean 2, std 1 of the three
    torch.testing.assert_close(got[1], group_advantages(rewards[1:2], eps=1e-4)[0])  # NaN-free rows: unchanged
    assert (got[2:] == 0).all()  # nothing scored, or no spread among the scored: no signal


def test_kl_bias_correction_keeps_the_loss_and_adds_the_ratio_gradient():
    new = torch.tensor([[[-1.0, -2.0]]], requires_grad=True)
    old, ref, adv = new.detach().clone(), torch.tensor([[[-1.5, -1.0]]]), torch.zeros(1, 1)
    grads = {}
    for corrected in (False, True):
        objective = PPOLite(k=1, baseline="none", kl_coef=1.0, kl_estimator="k3", kl_bias_correction=corrected)
        out = objective.loss(new, old, adv, None, ref)
        (grads[corrected],) = torch.autograd.grad(out.loss, new)
        grads[f"loss{corrected}"] = out.loss.detach()
    assert grads["lossFalse"] == grads["lossTrue"]  # the ratio is 1 on-policy
    d = ref - old
    k3 = d.exp() - d - 1
    # d(k3 * ratio)/d logp = (1 - e^d) + k3 at ratio 1; the grpo mean over 2 tokens halves both.
    torch.testing.assert_close(grads[False], (1 - d.exp()) / 2)
    torch.testing.assert_close(grads[True], (1 - d.exp() + k3) / 2)
