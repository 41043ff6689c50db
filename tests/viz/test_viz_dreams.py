"""Network dreams on a tiny trained SeedCNN: convergence, determinism, frozen weights, sweeps, hybrids, outputs."""

import copy
import os
import stat

import pytest
import torch
from PIL import Image

from prefalign.models import BinaryCNN
from prefalign.viz.dream_outputs import comparison_figure, render_frame, save_dream_outputs, sweep_figure
from prefalign.viz.dreams import (
    DreamResult,
    compare_dreams,
    dream,
    hybrid_targets,
    initial_noise,
    l2_sweep,
    parse_hybrid,
)

TARGETS = torch.arange(10)


@pytest.fixture(scope="module")
def digits_dream(trained_cnn) -> DreamResult:
    return dream(trained_cnn, TARGETS, steps=60, seed=0)


def test_dream_reaches_every_target(digits_dream):
    r = digits_dream
    assert r.images.shape == (10, 1, 28, 28)
    assert r.frames.shape == (61, 10, 1, 28, 28)  # start + 60 steps
    assert r.confidence.shape == (61, 10) and r.probs.shape == (61, 10, 10) and r.loss.shape == (61,)
    assert r.steps[0] == 0 and r.steps[-1] == 60
    assert r.loss[-1] < 0.1 * r.loss[0]
    assert (r.final_confidence >= 0.9).all(), r.final_confidence
    assert r.images.min() >= 0.0 and r.images.max() <= 1.0  # default clamp (0, 1)
    assert torch.allclose(r.images.half(), r.frames[-1])


def test_record_every_keeps_start_and_end(trained_cnn):
    r = dream(trained_cnn, TARGETS[:3], steps=10, record_every=4)
    assert r.steps.tolist() == [0, 4, 8, 10]


def test_same_seed_same_images_different_seed_different(trained_cnn, digits_dream):
    torch.manual_seed(123)  # the global RNG must not matter
    again = dream(trained_cnn, TARGETS, steps=60, seed=0)
    assert torch.equal(again.images, digits_dream.images)
    other = dream(trained_cnn, TARGETS, steps=60, seed=1)
    assert not torch.allclose(other.frames[0], digits_dream.frames[0])
    assert not torch.allclose(other.images, digits_dream.images)


def test_model_frozen_and_restored(trained_cnn):
    model = copy.deepcopy(trained_cnn).train()
    model.fc.bias.requires_grad_(False)  # a mixed state must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    dream(model, TARGETS[:4], steps=15)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_dream_works_under_inference_mode(trained_cnn):
    with torch.inference_mode():
        r = dream(trained_cnn, TARGETS[:2], steps=5)
    assert r.loss[-1] < r.loss[0]


def test_sgd_and_no_clamp(trained_cnn):
    r = dream(trained_cnn, TARGETS[:3], steps=20, optimizer="sgd", lr=50.0, clamp=None)
    assert r.loss[-1] < r.loss[0]
    with pytest.raises(ValueError, match="optimizer"):
        dream(trained_cnn, TARGETS[:1], steps=1, optimizer="lbfgs")


def test_l2_sweep_same_start_and_penalty_shrinks_pixels(trained_cnn):
    lambdas = [0.001, 0.01, 0.1, 1.0, 10.0]
    results = l2_sweep(trained_cnn, TARGETS, lambdas=lambdas, steps=40)
    assert list(results) == lambdas
    start = results[0.001].frames[0]
    assert all(torch.equal(r.frames[0], start) for r in results.values())
    assert all(r.lambda_l2 == lam for lam, r in results.items())
    energy = [r.images.pow(2).mean().item() for r in results.values()]
    assert energy[-1] < energy[0]  # the notebook's observation: the penalty darkens the dreams
    assert sweep_figure(results).axes


def test_hybrid_dreams_split_the_probability(trained_cnn):
    soft = hybrid_targets([(3, 5), "1:0.5,7:0.5"])
    r = dream(trained_cnn, soft, steps=100)
    assert r.soft and r.probs.shape[-1] == 10
    final = r.probs[-1]
    for row, (a, b) in enumerate([(3, 5), (1, 7)]):
        assert 0.4 <= final[row, a] <= 0.6 and 0.4 <= final[row, b] <= 0.6, final[row]
    # For soft targets, confidence is the probability mass on the hybrid's classes.
    assert torch.allclose(r.confidence[-1], torch.stack([final[0, [3, 5]].sum(), final[1, [1, 7]].sum()]))


def test_hybrid_targets_parsing():
    t = hybrid_targets(["3:0.5,5:0.5", "1,7", (2, 4), {0: 0.7, 9: 0.3}, [(6, 0.25), (8, 0.75)]])
    assert t.shape == (5, 10)
    assert torch.allclose(t.sum(1), torch.ones(5))
    assert t[0, 3] == t[0, 5] == 0.5 and t[1, 1] == 0.5 and t[2, 4] == 0.5
    assert t[3, 0] == pytest.approx(0.7) and t[4, 8] == pytest.approx(0.75)
    assert hybrid_targets("0,1", num_classes=2).shape == (1, 2)  # one bare spec is accepted
    assert parse_hybrid("2, 3, 4") == pytest.approx({2: 1 / 3, 3: 1 / 3, 4: 1 / 3})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("3:0.5,5:0.6", "sum to 1.1"),
        ("3:0.5,12:0.5", "out of range"),
        ("3:1.5,5:-0.5", "negative"),
        ("3:0.5,3:0.5", "twice"),
        ("3:0.5,5", "every class or for none"),
        ("three:1", "bad hybrid spec"),
        ("", "empty"),
    ],
)
def test_hybrid_targets_validation(spec, message):
    with pytest.raises(ValueError, match=message):
        hybrid_targets([spec])


def test_targets_validated_against_model():
    binary = BinaryCNN()
    with pytest.raises(ValueError, match="2 classes"):
        dream(binary, torch.tensor([0, 5]), steps=1)
    with pytest.raises(ValueError, match="integer"):
        dream(binary, torch.tensor([0.0, 1.0]), steps=1)
    with pytest.raises(ValueError, match="summing to 1"):
        dream(binary, torch.tensor([[0.7, 0.7]]), steps=1)
    assert dream(binary, torch.tensor([0, 1]), steps=2).probs.shape == (3, 2, 2)


def test_compare_dreams_share_the_start(trained_cnn):
    reference = copy.deepcopy(trained_cnn)
    torch.manual_seed(5)
    reference.fc.weight.data += 0.05 * torch.randn_like(reference.fc.weight)
    pol, ref = compare_dreams(trained_cnn, reference, TARGETS[:4], steps=10, seed=3)
    assert torch.equal(pol.frames[0], ref.frames[0])
    assert torch.equal(pol.frames[0].float(), initial_noise(4, seed=3).half().float())
    assert not torch.equal(pol.images, ref.images)
    fig = comparison_figure(pol, ref)
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["policy", "reference"]


def test_save_dream_outputs(tmp_path, digits_dream):
    paths = save_dream_outputs(digits_dream, tmp_path / "out", "digits")
    names = {p.name for p in paths}
    assert {"digits_grid.png", "digits_confidence.png", "digits.gif"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "out" / "digits.gif") as gif:
        assert 1 < gif.n_frames <= 60
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporary files left behind


def test_mp4_only_with_ffmpeg(tmp_path, monkeypatch, trained_cnn):
    r = dream(trained_cnn, TARGETS[:3], steps=8)
    path = os.environ.get("PATH", "")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not any(p.suffix == ".mp4" for p in save_dream_outputs(r, tmp_path / "a", "d"))
    # A stand-in ffmpeg that stores its stdin in the output file: checks the invocation and the raw frames.
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a; do last="$a"; done\ncat > "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + path)
    paths = save_dream_outputs(r, tmp_path / "b", "d", max_frames=4)
    mp4 = tmp_path / "b" / "d.mp4"
    assert mp4 in paths
    w, h = render_frame(r.frames[0], ["x"] * 3, "step 0", ncols=3).size
    assert mp4.stat().st_size == 4 * w * h * 3
