"""The denoiser's building blocks: the conditional UNet, the DDPM noise schedule and the DDIM sampler."""

from __future__ import annotations

import io
import math

import pytest
import torch

from prefalign.families.denoiser.sampling import ddim_sample, initial_noise, per_class_labels
from prefalign.families.denoiser.schedule import NoiseSchedule
from prefalign.models.unet import ConditionalUNet

TINY = {"channels": (8, 8, 8), "time_dim": 16, "groups": 4}  # a few thousand parameters: fast, same topology


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Clearly different, not just fp32 noise (allclose's atol=1e-8 calls near-zero rounding a difference)."""
    return (a - b).abs().max().item() > 1e-3


def _perturbed(model: ConditionalUNet) -> ConditionalUNet:
    """The model with its zero-initialised output conv randomised, so outputs depend on the inputs."""
    torch.manual_seed(1)
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    return model


# --- ConditionalUNet -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_unet_output_shape_matches_input(batch):
    model = _perturbed(ConditionalUNet(**TINY))
    x = torch.randn(batch, 1, 28, 28)
    out = model(x, torch.randint(0, 1000, (batch,)), torch.randint(0, 11, (batch,)))
    assert out.shape == x.shape


def test_unet_parameter_count_at_defaults():
    n = sum(p.numel() for p in ConditionalUNet().parameters())
    assert 300_000 <= n <= 1_000_000


def test_untrained_unet_predicts_zero_noise():
    model = ConditionalUNet(**TINY)
    out = model(torch.randn(2, 1, 28, 28), torch.tensor([0, 999]), torch.tensor([3, 7]))
    assert torch.equal(out, torch.zeros_like(out))


def test_unet_uses_labels_including_the_null_label():
    model = _perturbed(ConditionalUNet(**TINY))
    assert model.null_label == 10
    x = torch.randn(1, 1, 28, 28).expand(3, -1, -1, -1)
    out = model(x, torch.full((3,), 500), torch.tensor([0, 1, model.null_label]))
    assert _differ(out[0], out[1])
    assert _differ(out[0], out[2])


def test_unet_uses_timesteps_and_accepts_float_timesteps():
    model = _perturbed(ConditionalUNet(**TINY))
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    y = torch.tensor([4, 4])
    out = model(x, torch.tensor([10, 900]), y)
    assert _differ(out[0], out[1])
    torch.testing.assert_close(model(x, torch.tensor([10.0, 900.0]), y), out)


def test_unet_runs_under_bf16_autocast():
    model = _perturbed(ConditionalUNet(**TINY))
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([5, 600]), torch.tensor([2, 10])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert out.shape == x.shape
    torch.testing.assert_close(out.float(), model(x, t, y), atol=0.05, rtol=0.05)


def test_unet_init_args_rebuild_the_same_model_after_save_load():
    model = ConditionalUNet(channels=(8, 16), num_classes=3, time_dim=16, groups=4)
    buffer = io.BytesIO()
    torch.save({"init_args": model.init_args}, buffer)
    buffer.seek(0)
    init_args = torch.load(buffer, weights_only=True)["init_args"]
    assert init_args == model.init_args
    rebuilt = ConditionalUNet(**init_args)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.null_label == 3


# --- NoiseSchedule ---------------------------------------------------------------------------------------------------


def test_linear_schedule_matches_hand_computed_alphas_cumprod():
    schedule = NoiseSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3)  # betas 0.1, 0.2, 0.3
    assert schedule.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(schedule.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504]))


def test_add_noise_matches_hand_value():
    schedule = NoiseSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3)
    x0 = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    noise = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    out = schedule.add_noise(x0, noise, torch.tensor([0, 2]))
    expected = torch.tensor(
        [
            [math.sqrt(0.9) * 1 + math.sqrt(0.1) * 2, -math.sqrt(0.9)],  # t = 0: ᾱ = 0.9, per-sample broadcast
            [math.sqrt(0.504) * 0.5 - math.sqrt(0.496), math.sqrt(0.496)],  # t = 2: ᾱ = 0.504
        ]
    )
    torch.testing.assert_close(out, expected)
    assert schedule.add_noise(x0.bfloat16(), noise, torch.tensor([0, 2])).dtype == torch.bfloat16


def test_cosine_schedule_is_decreasing_in_unit_interval():
    a = NoiseSchedule(num_timesteps=1000, kind="cosine").alphas_cumprod
    assert a.shape == (1000,)
    assert (a > 0).all() and (a <= 1).all()
    assert (a[1:] < a[:-1]).all()
    assert a[0] > 0.999 and a[-1] < 1e-3  # near-clean at t=0, near-pure noise at t=T-1


def test_sample_timesteps_in_range_and_reproducible():
    schedule = NoiseSchedule(num_timesteps=7)
    t = schedule.sample_timesteps(500, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 6
    assert torch.equal(t, schedule.sample_timesteps(500, generator=torch.Generator().manual_seed(0)))
    part = schedule.sample_timesteps(500, generator=torch.Generator().manual_seed(0), low=2, high=5)
    assert part.min() == 2 and part.max() == 4
    with pytest.raises(ValueError, match="low < high"):
        schedule.sample_timesteps(5, low=5, high=5)


def test_ddim_timesteps_trailing_spacing():
    schedule = NoiseSchedule()
    assert schedule.ddim_timesteps(4).tolist() == [999, 749, 499, 249]
    assert schedule.ddim_timesteps(1).tolist() == [999]
    assert schedule.ddim_timesteps(1000).tolist() == list(range(999, -1, -1))
    assert NoiseSchedule(num_timesteps=10).ddim_timesteps(3).tolist() == [9, 6, 2]  # round(10, 6.67, 3.33) - 1
    assert NoiseSchedule(num_timesteps=5).ddim_timesteps(2).tolist() == [4, 1]  # round(5, 2.5) - 1, half to even
    # numpy's float arange (as in diffusers) yields 62 entries for 61 steps here; the grid must have exactly `steps`.
    t = schedule.ddim_timesteps(61)
    assert len(t) == 61 and t[0] == 999 and t[-1] >= 0 and (t[1:] < t[:-1]).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_timesteps": 0},
        {"kind": "quadratic"},
        {"beta_start": 0.0},
        {"beta_start": 0.02, "beta_end": 0.01},
        {"beta_end": 1.0},
    ],
)
def test_schedule_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        NoiseSchedule(**kwargs)


@pytest.mark.parametrize("steps", [0, 11])
def test_ddim_timesteps_rejects_bad_step_counts(steps):
    with pytest.raises(ValueError):
        NoiseSchedule(num_timesteps=10).ddim_timesteps(steps)


# --- DDIM sampler ----------------------------------------------------------------------------------------------------


class Oracle:
    """Knows x0 per label and returns the exact ε that maps it to x_t, so DDIM must land on x0; records its calls."""

    def __init__(self, schedule: NoiseSchedule, x0_by_label: torch.Tensor) -> None:
        self.schedule, self.x0_by_label, self.calls = schedule, x0_by_label, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((t.clone(), y.clone()))
        a = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x0_by_label[y]) / (1 - a).sqrt()


def _oracle_setup(n: int = 6):
    # T = 100 keeps ᾱ_{T-1} ≈ 0.37: with T = 1000, ᾱ_999 ≈ 4e-5 and a one-step x0 = (x_T − ...)/sqrt(ᾱ) magnifies
    # fp32 rounding of x_T ~150x, past the 1e-5 tolerance (an arithmetic limit, not a sampler bug).
    schedule = NoiseSchedule(num_timesteps=100)
    x0_by_label = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    labels = torch.arange(n) % 3
    return schedule, Oracle(schedule, x0_by_label), labels, initial_noise(n, seed=0, shape=(1, 4, 4))


@pytest.mark.parametrize("steps", [1, 10])
def test_ddim_recovers_x0_from_an_oracle(steps):
    schedule, oracle, labels, noise = _oracle_setup()
    out = ddim_sample(oracle, schedule, labels, noise, steps=steps, clip=False)
    assert out.dtype == torch.float32 and out.shape == noise.shape
    torch.testing.assert_close(out, oracle.x0_by_label[labels], atol=1e-5, rtol=0)
    assert len(oracle.calls) == steps
    assert [int(t[0]) for t, _ in oracle.calls] == schedule.ddim_timesteps(steps).tolist()
    assert all(t.dtype == torch.long and t.shape == (len(noise),) for t, _ in oracle.calls)


def test_ddim_is_deterministic_and_chunking_does_not_change_it():
    schedule = NoiseSchedule()
    # A model that is not an oracle, so the samples still carry the noise and the sampler's arithmetic matters.
    model = lambda x, t, y: 0.5 * x + 0.1 * y.float().view(-1, 1, 1, 1)  # noqa: E731
    noise = initial_noise(7, seed=3, shape=(1, 4, 4))
    labels = torch.arange(7) % 3
    full = ddim_sample(model, schedule, labels, noise, steps=5, batch_size=None)
    assert torch.equal(full, ddim_sample(model, schedule, labels, noise, steps=5, batch_size=None))
    seen = []
    spy = lambda x, t, y: seen.append(len(x)) or model(x, t, y)  # noqa: E731
    assert torch.equal(full, ddim_sample(spy, schedule, labels, noise, steps=5, batch_size=3))
    assert seen == [3] * 5 + [3] * 5 + [1] * 5  # chunk by chunk, every step of a chunk before the next
    assert torch.equal(full, ddim_sample(model, schedule, labels, noise, steps=5, batch_size=1))
    assert not torch.equal(
        full, ddim_sample(model, schedule, labels, initial_noise(7, seed=4, shape=(1, 4, 4)), steps=5)
    )


def test_ddim_without_guidance_makes_one_conditional_call_per_step():
    schedule, oracle, labels, noise = _oracle_setup()
    ddim_sample(oracle, schedule, labels, noise, steps=4, null_label=3)
    assert len(oracle.calls) == 4
    assert all(torch.equal(y, labels) for _, y in oracle.calls)


def test_ddim_guidance_combines_conditional_and_unconditional_in_one_forward():
    schedule = NoiseSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3)  # ᾱ_2 = 0.504
    null, calls = 5, []

    def model(x, t, y):
        calls.append(y.clone())
        return x * 0 + 0.1 + 0.2 * (y == null).float().view(-1, 1, 1, 1)  # ε_cond = 0.1, ε_uncond = 0.3

    labels = torch.tensor([0, 2])
    noise = torch.full((2, 1, 2, 2), 0.1)
    out = ddim_sample(model, schedule, labels, noise, steps=1, guidance=3.0, null_label=null, clip=False)
    eps = 0.3 + 3.0 * (0.1 - 0.3)  # = -0.3
    expected = (0.1 - math.sqrt(1 - 0.504) * eps) / math.sqrt(0.504)  # one step, ᾱ_prev = 1: output is x0_pred
    torch.testing.assert_close(out, torch.full_like(noise, expected))
    assert len(calls) == 1 and calls[0].tolist() == [0, 2, null, null]


def test_ddim_clip_clamps_each_x0_prediction_and_the_output():
    schedule = NoiseSchedule(num_timesteps=3, beta_start=0.1, beta_end=0.3)  # ᾱ = 0.9, 0.72, 0.504
    assert schedule.ddim_timesteps(2).tolist() == [2, 1]
    model = lambda x, t, y: torch.where(t == 2, -3.0, 0.0).view(-1, 1, 1, 1).expand_as(x)  # noqa: E731
    noise = torch.zeros(1, 1, 2, 2)
    # Step 1 (t=2): x0_pred = 3·sqrt(0.496/0.504) ≈ 2.98. With clip it becomes 1, x_1 = sqrt(0.72) − 3·sqrt(0.28),
    # and step 2 (ε = 0) returns x_1 / sqrt(0.72) ≈ −0.87.
    clipped = ddim_sample(model, schedule, torch.tensor([0]), noise, steps=2, clip=True)
    torch.testing.assert_close(clipped, torch.full_like(noise, 1 - 3 * math.sqrt(0.28 / 0.72)))
    # Without clip x_1 = sqrt(0.72)·2.98 − 3·sqrt(0.28) ≈ 0.94, so x0 ≈ 1.10: the returned sample is still clamped.
    unclipped = ddim_sample(model, schedule, torch.tensor([0]), noise, steps=2, clip=False)
    assert torch.equal(unclipped, torch.ones_like(noise))


def test_ddim_rejects_bad_arguments():
    schedule, oracle, labels, noise = _oracle_setup()
    with pytest.raises(ValueError, match="steps must be ≥ 1"):
        ddim_sample(oracle, schedule, labels, noise, steps=0)
    with pytest.raises(ValueError):
        ddim_sample(oracle, schedule, labels[:-1], noise)
    with pytest.raises(ValueError, match="null_label"):
        ddim_sample(oracle, schedule, labels, noise, guidance=2.0)


def test_ddim_with_a_real_unet_under_autocast():
    model = _perturbed(ConditionalUNet(**TINY))
    schedule = NoiseSchedule(num_timesteps=50)
    noise = initial_noise(2, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ddim_sample(
            model, schedule, torch.tensor([1, 2]), noise, steps=2, guidance=2.0, null_label=model.null_label
        )
    assert out.dtype == torch.float32 and out.shape == noise.shape
    assert out.abs().max() <= 1 and torch.isfinite(out).all()


def test_initial_noise_and_per_class_labels():
    assert torch.equal(initial_noise(3, seed=7), initial_noise(3, seed=7))
    assert not torch.equal(initial_noise(3, seed=7), initial_noise(3, seed=8))
    assert initial_noise(3, seed=7).shape == (3, 1, 28, 28)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(initial_noise(2, seed=7, shape=(1, 2, 2)), initial_noise(3, seed=7, shape=(1, 2, 2))[:2])
    labels = per_class_labels(2, num_classes=3)
    assert labels.dtype == torch.long and labels.tolist() == [0, 0, 1, 1, 2, 2]
