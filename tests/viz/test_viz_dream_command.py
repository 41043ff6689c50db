"""The `dream` subcommand end to end, through argv as `python -m prefalign dream` will call it."""

import pytest
import torch
from PIL import Image

from prefalign.checkpoint import CheckpointError, save_weights
from prefalign.models import BinaryCNN, SeedCNN
from prefalign.viz.dream_command import dream_command, main


@pytest.fixture
def weights(tmp_path, trained_cnn):
    policy = save_weights(trained_cnn, tmp_path / "policy.pt")
    torch.manual_seed(1)
    reference = save_weights(SeedCNN(channels=8), tmp_path / "reference.pt")
    return policy, reference


def test_main_end_to_end(tmp_path, weights, capsys):
    policy, reference = weights
    out = tmp_path / "dreams"
    argv = [
        "--ckpt",
        str(policy),
        "--out_dir",
        str(out),
        "--targets",
        "[0, 3, 8]",
        "--steps",
        "40",
        "--gif_frames",
        "5",
        "--sweep_l2",
        "true",
        "--l2_values",
        "[0.01, 10.0]",
        "--hybrid+",
        "3:0.5,5:0.5",
        "--hybrid+",
        "1,7",
        "--compare_ckpt",
        str(reference),
    ]
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    for prefix in ["dream", "l2_0.01", "l2_10", "hybrid", "reference"]:
        assert {f"{prefix}_grid.png", f"{prefix}_confidence.png", f"{prefix}.gif"} <= names, prefix
    assert {"compare.png", "l2_sweep.png"} <= names
    with Image.open(out / "hybrid.gif") as gif:
        assert 1 < gif.n_frames <= 5
    printed = capsys.readouterr().out
    assert "dream (λ=0): 0: " in printed and "hybrid: 3 " in printed and "reference:" in printed


def test_command_returns_paths_and_defaults_to_all_classes(tmp_path, capsys):
    ckpt = save_weights(BinaryCNN(), tmp_path / "binary.pt")
    paths = dream_command(str(ckpt), out_dir=str(tmp_path / "o"), steps=3, gif_frames=2)
    assert paths and all(isinstance(p, str) for p in paths)
    assert "0: " in capsys.readouterr().out  # two classes: targets 0 and 1
    assert main(["--ckpt", str(ckpt), "--out_dir", str(tmp_path / "o2"), "--targets", "[0, 5]", "--steps", "1"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_missing_or_corrupt_checkpoint(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="not found"):
        dream_command(str(tmp_path / "missing.pt"), out_dir=str(tmp_path / "o"))
    assert main(["--ckpt", str(tmp_path / "missing.pt"), "--out_dir", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--ckpt", str(bad), "--out_dir", str(tmp_path / "o")]) != 0
    assert not (tmp_path / "o").exists()


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ["--ckpt", "--compare_ckpt", "--sweep_l2", "--hybrid", "--clamp_min", "--gif_frames"]:
        assert option in text
    assert "Seed of the starting noise" in text
