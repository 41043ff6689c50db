"""The denoiser family: shared-noise pairing, the Diffusion-DPO loss by hand, refusals, metrics and mining."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prefalign.core.module import AlignmentModule
from prefalign.data.diffusion_pairs import rank_samples, style_pairs
from prefalign.families.denoiser import DenoiserFamily, denoising_logp
from prefalign.families.denoiser.metrics import frechet_distance, win_rate, within_class_diversity
from prefalign.models import ConditionalUNet, LeNet
from prefalign.objectives import DPO, IPO, ORPO, RPO, SFT, PPOLite


class Recorder(nn.Module):
    """ε_θ(x_t, t, y) = scale · x_t, recording every call: a denoiser whose loss can be computed by hand."""

    null_label = 10

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t, t, y):
        self.calls.append((x_t.clone(), t.clone(), y.clone()))
        return self.scale * x_t


def pair_batch(n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "chosen": torch.rand(n, 1, 28, 28, generator=g),
        "rejected": torch.rand(n, 1, 28, 28, generator=g),
        "y": torch.tensor([1, 4, 7][:n]),
    }


def test_winner_and_loser_share_t_and_noise_and_policy_and_reference_see_the_same_inputs():
    family = DenoiserFamily(num_timesteps=50)
    policy, reference = Recorder(0.3), Recorder(0.1)
    batch = pair_batch()
    family.pair_logps(policy, reference, batch)
    ((x_t, t, y),) = policy.calls
    ((rx_t, rt, ry),) = reference.calls
    assert torch.equal(x_t, rx_t) and torch.equal(t, rt) and torch.equal(y, ry)
    n = 3
    assert torch.equal(t[:n], t[n:]) and torch.equal(y[:n], batch["y"]) and torch.equal(y[n:], batch["y"])
    ab = family.noise_schedule.alphas_cumprod[t[:n]].view(-1, 1, 1, 1)
    x0_w, x0_l = batch["chosen"] * 2 - 1, batch["rejected"] * 2 - 1
    eps_w = (x_t[:n] - ab.sqrt() * x0_w) / (1 - ab).sqrt()
    eps_l = (x_t[n:] - ab.sqrt() * x0_l) / (1 - ab).sqrt()
    torch.testing.assert_close(eps_w, eps_l, atol=1e-4, rtol=0)  # the same ε under both images


def test_pair_timesteps_bound_the_pairs_t_and_leave_sft_on_the_whole_process():
    family = DenoiserFamily(num_timesteps=100, pair_timesteps=(0.6, 0.8))
    policy = Recorder(0.3)
    family.pair_logps(
        policy,
        None,
        {"chosen": torch.rand(64, 1, 28, 28), "rejected": torch.rand(64, 1, 28, 28), "y": torch.arange(64) % 10},
    )
    t = policy.calls[0][1]
    assert 60 <= int(t.min()) and int(t.max()) <= 79 and len(t.unique()) > 10
    sft = Recorder(0.3)
    family.pair_logps(sft, None, {"x": torch.rand(256, 1, 28, 28), "y": torch.arange(256) % 10})
    assert int(sft.calls[0][1].min()) < 60 and int(sft.calls[0][1].max()) > 79
    for bad in ((0.5, 0.5), (-0.1, 1.0), (0.2, 1.1)):
        with pytest.raises(ValueError, match="pair_timesteps"):
            DenoiserFamily(pair_timesteps=bad)


def test_dpo_loss_matches_diffusers_formula_by_hand():
    family = DenoiserFamily(num_timesteps=50)
    policy, reference = Recorder(0.3), Recorder(0.1)
    beta = 500.0
    out = DPO(beta=beta)(family.pair_logps(policy, reference, pair_batch()))
    ((x_t, t, _),) = policy.calls
    ab = family.noise_schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    batch = pair_batch()
    x0 = torch.cat([batch["chosen"], batch["rejected"]]) * 2 - 1
    noise = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    mse = lambda scale: (noise - scale * x_t).square().mean(dim=(1, 2, 3))  # noqa: E731
    model_diff = mse(0.3)[:3] - mse(0.3)[3:]
    ref_diff = mse(0.1)[:3] - mse(0.1)[3:]
    expected = -torch.nn.functional.logsigmoid(
        -0.5 * beta * (model_diff - ref_diff)
    ).mean()  # diffusers' train_diffusion_dpo.py
    torch.testing.assert_close(out.loss, expected, atol=1e-4, rtol=1e-4)


def test_dpo_loss_is_exactly_ln2_when_the_policy_is_the_reference():
    torch.manual_seed(0)
    unet = ConditionalUNet(channels=(8, 8), time_dim=16, groups=4)
    for p in unet.parameters():  # leave the zero-initialised output layer behind: a model that predicts something
        nn.init.normal_(p, std=0.05)
    reference = ConditionalUNet(**unet.init_args)
    reference.load_state_dict(unet.state_dict())
    family = DenoiserFamily(num_timesteps=100)
    for objective in (DPO(beta=5000), RPO(beta=5000, alpha=0.0)):
        loss = objective(family.pair_logps(unet, reference, pair_batch())).loss
        assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_ipo_and_rpo_carry_over_and_rpo_adds_the_winners_denoising_loss():
    torch.manual_seed(1)
    family = DenoiserFamily(num_timesteps=50)
    policy, reference = Recorder(0.3), Recorder(0.1)
    torch.manual_seed(2)
    lp = family.pair_logps(policy, reference, pair_batch())
    dpo = DPO(beta=100.0)(lp).loss
    rpo = RPO(beta=100.0, alpha=2.0)(lp).loss
    # RPO = DPO + α · (−log π(y_w)) = DPO + α · ½ · mse(winner)
    torch.testing.assert_close(rpo, dpo - 2.0 * lp.policy_chosen.mean())
    assert torch.isfinite(IPO(tau=0.1)(lp).loss)


def test_sft_is_half_the_ddpm_mse_and_label_dropout_uses_the_null_class():
    batch = {"x": torch.rand(64, 1, 28, 28), "y": torch.arange(64) % 10}
    for rate, expect_null in ((0.0, 0), (1.0, 64)):
        model = Recorder(0.2)
        lp = DenoiserFamily(num_timesteps=50, label_dropout=rate).pair_logps(model, None, batch)
        ((x_t, t, y),) = model.calls
        assert int((y == 10).sum()) == expect_null
        assert lp.policy_rejected is None and lp.reference_chosen is None
        loss = SFT()(lp).loss
        assert loss.item() > 0
    dropped = Recorder(0.2)
    DenoiserFamily(num_timesteps=50, label_dropout=0.5).pair_logps(dropped, None, batch)
    assert 10 < int((dropped.calls[0][2] == 10).sum()) < 54


def test_denoising_logp_by_hand():
    model = Recorder(0.5)
    x_t = torch.ones(2, 1, 2, 2)
    noise = torch.zeros(2, 1, 2, 2)
    noise[1] = 1.0
    lp = denoising_logp(model, x_t, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), noise)
    torch.testing.assert_close(lp, torch.tensor([-0.5 * 0.25, -0.5 * 0.25]))


def test_objectives_that_need_a_true_probability_or_sampling_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="true_logprob"):
        AlignmentModule(backbone=ConditionalUNet(), family=DenoiserFamily(), objective=ORPO(), reference_ckpt="x.pt")
    with pytest.raises(ValueError, match="sampling"):
        AlignmentModule(backbone=ConditionalUNet(), family=DenoiserFamily(), objective=PPOLite(), reference_ckpt="x.pt")
    with pytest.raises(ValueError, match="beta"):
        DPO(beta=0.0)


def test_check_config_refuses_a_classifier_and_the_same_judge_twice():
    family = DenoiserFamily(judge_arch="lenet", judge_seed=2)
    with pytest.raises(ValueError, match="class-conditional denoiser"):
        family.check_config(LeNet(), None)

    class Data:
        mining_judge = ("lenet", 2)

    with pytest.raises(ValueError, match="same model"):
        family.check_config(ConditionalUNet(), Data())
    Data.mining_judge = ("lenet", 1)
    family.check_config(ConditionalUNet(), Data())


def test_frechet_distance_by_hand():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    a = (a - a.mean()) / a.std()  # exactly mean 0, (unbiased) variance 1
    b = 3 + 2 * a  # mean 3, standard deviation 2
    assert frechet_distance(a, b) == pytest.approx(9 + (1 - 2) ** 2, rel=1e-9)  # (μ1−μ2)² + (σ1−σ2)²
    x = torch.randn(500, 6, generator=g)
    assert abs(frechet_distance(x, x)) < 1e-8
    assert frechet_distance(x, x + 1) == pytest.approx(6.0, rel=1e-6)  # a pure shift: ‖Δμ‖²
    with pytest.raises(ValueError, match="two samples"):
        frechet_distance(x[:1], x)


def test_within_class_diversity_and_win_rate_by_hand():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 0: distance 5; class 1: 0; class 2: one sample, skipped
    assert within_class_diversity(features, labels) == pytest.approx(2.5)
    assert win_rate(torch.tensor([0.9, 0.2, 0.5, 0.7]), torch.tensor([0.1, 0.3, 0.5, 0.7])) == pytest.approx(
        (1 + 0 + 0.5 + 0.5) / 4
    )
    with pytest.raises(ValueError):
        win_rate(torch.ones(2), torch.ones(3))


def test_sample_summary_separates_the_diversity_of_right_samples():
    from types import SimpleNamespace

    from prefalign.families.denoiser.evaluation import SampleScores

    labels = torch.tensor([0, 0, 0, 1, 1])
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [30.0, 40.0], [1.0, 1.0], [1.0, 2.0]])
    correct = torch.tensor([True, True, False, True, True])  # the far-away sample of class 0 is a wrong digit
    scores = SampleScores(labels, torch.zeros(5, 1, 28, 28), torch.full((5,), 0.5), correct, features)
    module = SimpleNamespace(trainer=SimpleNamespace(world_size=1))
    summary = DenoiserFamily()._summary(module, scores, real=features)
    assert summary["error_rate"] == pytest.approx(0.2)
    # class 0: distances 5, 50, 45 → mean 100/3; class 1: 1 → diversity (100/3 + 1)/2; right samples only: (5 + 1)/2
    assert summary["diversity"] == pytest.approx((100 / 3 + 1) / 2)
    assert summary["diversity_correct"] == pytest.approx(3.0)
    lone = SampleScores(
        labels,
        torch.zeros(5, 1, 28, 28),
        torch.full((5,), 0.5),
        torch.tensor([True, False, False, True, False]),
        features,
    )
    assert "diversity_correct" not in DenoiserFamily()._summary(
        module, lone, real=features
    )  # no class has two right samples


def test_rank_samples_pairs_confident_winners_with_rejected_losers_within_a_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    p = torch.tensor([0.95, 0.99, 0.30, 0.6, 0.97, 0.92, 0.05])
    correct = torch.tensor([True, True, False, True, True, True, False])
    winners, losers = rank_samples(p, correct, labels, 2, accept_above=0.9, reject_below=0.5, pairs_per_loser=1)
    # class 0: winners 1 (0.99), 0 (0.95); losers 2 (wrong); 3 is right at 0.6: neither. class 1: winners 4, 5; loser 6
    assert winners.tolist() == [1, 4] and losers.tolist() == [2, 6]
    winners, losers = rank_samples(p, correct, labels, 2, accept_above=0.9, reject_below=0.5, pairs_per_loser=2)
    assert winners.tolist() == [1, 0, 4, 5] and losers.tolist() == [2, 2, 6, 6]
    assert all(labels[win] == labels[lose] for win, lose in zip(winners, losers))
    none_w, none_l = rank_samples(p, correct, labels, 2, accept_above=0.999, reject_below=0.01, pairs_per_loser=1)
    assert len(none_w) == 0 and len(none_l) == 0


def test_rank_samples_nearest_winners_are_the_closest_accepted_images_of_the_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    p = torch.tensor([0.99, 0.95, 0.20, 0.10, 0.97, 0.30])
    correct = torch.tensor([True, True, False, False, True, False])
    # one-pixel "images": loser 2 sits at 0.9, next to winner 1 (1.0) rather than the more confident winner 0 (0.0);
    # loser 3 sits at 0.1, next to winner 0; class 1 has one winner
    images = torch.tensor([0.0, 1.0, 0.9, 0.1, 0.5, 0.5]).view(6, 1, 1, 1)
    winners, losers = rank_samples(p, correct, labels, 2, 0.9, 0.5, 1, winners_by="nearest", images=images)
    assert losers.tolist() == [3, 2, 5] and winners.tolist() == [0, 1, 4]  # losers worst first, as with confidence
    winners, losers = rank_samples(p, correct, labels, 2, 0.9, 0.5, 2, winners_by="nearest", images=images)
    assert losers.tolist() == [3, 3, 2, 2, 5] and winners.tolist() == [
        0,
        1,
        1,
        0,
        4,
    ]  # nearest first; one winner in class 1
    with pytest.raises(ValueError, match="needs the images"):
        rank_samples(p, correct, labels, 2, 0.9, 0.5, 1, winners_by="nearest")
    with pytest.raises(ValueError, match="choose 'confidence', 'nearest', 'spread' or 'atypical'"):
        rank_samples(p, correct, labels, 2, 0.9, 0.5, 1, winners_by="random", images=images)


def test_rank_samples_spread_winners_cover_every_confidence_rank():
    # class 0: six winners (confidence ranks 0..5 are samples 5, 4, ..., 0) and one loser; class 1: two winners, two losers
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    p = torch.tensor([0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.10, 0.97, 0.98, 0.20, 0.30])
    correct = torch.tensor([True] * 6 + [False, True, True, False, True])
    confident, _ = rank_samples(p, correct, labels, 2, 0.9, 0.5, 2)
    assert confident.tolist()[:2] == [5, 4]  # the top two ranks only
    winners, losers = rank_samples(p, correct, labels, 2, 0.9, 0.5, 2, winners_by="spread")
    assert winners.tolist()[:2] == [5, 2] and losers.tolist()[:2] == [6, 6]  # ranks 0 and 3 of six: the whole range
    # class 1: four slots for two winners, so every winner is used, cycling as with confidence; losers worst first
    assert winners.tolist()[2:] == [8, 7, 8, 7] and losers.tolist()[2:] == [9, 9, 10, 10]
    one, _ = rank_samples(p, correct, labels, 2, 0.9, 0.5, 3, winners_by="spread")
    assert one.tolist()[:3] == [5, 3, 1]  # ranks 0, 2, 4: distinct, evenly spaced


def test_rank_samples_atypical_winners_are_farthest_from_their_class_mean():
    # class 0: four winners with 1-D features 0, 1, 2, 10 (mean 3.25: distances 3.25, 2.25, 1.25, 6.75) and two losers
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    p = torch.tensor([0.99, 0.98, 0.97, 0.91, 0.10, 0.20, 0.95, 0.30])
    correct = torch.tensor([True, True, True, True, False, False, True, False])
    features = torch.tensor([[0.0], [1.0], [2.0], [10.0], [50.0], [60.0], [0.0], [0.0]])
    winners, losers = rank_samples(p, correct, labels, 2, 0.9, 0.5, 2, winners_by="atypical", features=features)
    # the worst loser (4) meets the two least typical winners (3, then 0); the next loser the next two (1, 2)
    assert winners.tolist()[:4] == [3, 0, 1, 2] and losers.tolist()[:4] == [4, 4, 5, 5]
    assert winners.tolist()[4:] == [6] and losers.tolist()[4:] == [7]  # one winner: k = 1
    confident, _ = rank_samples(p, correct, labels, 2, 0.9, 0.5, 2)
    assert confident.tolist()[:4] == [0, 1, 2, 3]  # by confidence the outlier comes last
    with pytest.raises(ValueError, match="features"):
        rank_samples(p, correct, labels, 2, 0.9, 0.5, 1, winners_by="atypical")


def test_style_pairs_let_the_least_typical_accepted_sample_win_over_the_most_typical():
    # class 0: five accepted samples with 1-D features 0, 1, 2, 3, 9 (mean 3: distances 3, 2, 1, 0, 6), one rejected
    # sample (never in a style pair), one accepted but unconfident (p < 0.9); class 1: a single accepted sample
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])
    p = torch.tensor([0.99, 0.95, 0.93, 0.97, 0.91, 0.10, 0.60, 0.99])
    correct = torch.tensor([True, True, True, True, True, False, True, True])
    features = torch.tensor([[0.0], [1.0], [2.0], [3.0], [9.0], [100.0], [-50.0], [0.0]])
    winners, losers = style_pairs(p, correct, labels, features, 2, accept_above=0.9, per_class=5)
    # at most half of five: two pairs, farthest (4, then 0) over nearest (3, then 2); class 1 has too few
    assert winners.tolist() == [4, 0] and losers.tolist() == [3, 2]
    one_w, one_l = style_pairs(p, correct, labels, features, 2, accept_above=0.9, per_class=1)
    assert one_w.tolist() == [4] and one_l.tolist() == [3]
    none_w, _ = style_pairs(p, correct, labels, features, 2, accept_above=0.999, per_class=3)
    assert len(none_w) == 0


def test_judge_scores_features_and_cached_judges(tmp_path, monkeypatch):
    from prefalign.data.datamodules import NoisyMNISTDataModule
    from prefalign.families.denoiser import judge as judge_module

    data = NoisyMNISTDataModule(source="synthetic", synthetic_size=(600, 200), val_size=100)
    data.setup("fit")
    rng = torch.get_rng_state()
    model = judge_module.ensure_judge("lenet", 0, data, tmp_path, min_accuracy=0.9)  # synthetic digits are easy
    assert torch.equal(torch.get_rng_state(), rng)  # trained or cached, a judge leaves the run's random state alone
    scores = judge_module.judge_scores(model, data.splits["test"]["x_clean"][:50])
    assert scores.features.shape == (50, 84)  # LeNet's penultimate layer
    labels = data.splits["test"]["y"][:50]
    assert scores.correct(labels).float().mean() > 0.9
    assert torch.all((scores.p_class(labels) > 0) & (scores.p_class(labels) <= 1))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached judge must not be trained again")

    monkeypatch.setattr(judge_module, "train_judge", no_training)
    again = judge_module.ensure_judge("lenet", 0, data, tmp_path)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="below the required"):
        judge_module.ensure_judge("lenet", 0, data, tmp_path, min_accuracy=1.01)
    with pytest.raises(ValueError, match="unknown judge architecture"):
        judge_module.build_judge("resnet")


def test_lora_denoiser_adapters_off_is_the_base_bit_for_bit_and_dpo_starts_at_ln2(tmp_path):
    from prefalign.checkpoint import save_weights
    from prefalign.models import LoRA
    from prefalign.models.lora import AdaptersOffReference

    torch.manual_seed(0)
    base = ConditionalUNet(channels=(8, 8), time_dim=16, groups=4)
    for p in base.parameters():
        nn.init.normal_(p, std=0.05)
    path = save_weights(base, tmp_path / "ref.pt")
    policy = LoRA({"class_path": "prefalign.models.ConditionalUNet", "init_args": base.init_args}, rank=2)
    policy.load_base_weights(str(path))
    reference = AdaptersOffReference(policy)
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 3, 10, 9])
    assert torch.equal(policy(x, t, y), base(x, t, y))  # zero-initialised adapters: exactly the base
    family = DenoiserFamily()
    loss = DPO(beta=5000)(family.pair_logps(policy, reference, pair_batch())).loss
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    for layer in policy.adapted_layers():  # trained adapters: the policy moves, the adapters-off reference does not
        nn.init.normal_(layer.lora_B.weight, std=0.1)
    assert not torch.equal(policy(x, t, y), base(x, t, y))
    assert torch.equal(reference(x, t, y), base(x, t, y))
