"""Every handled bad input, through prefalign.cli.main: one line naming the problem and the fix, an exit code, no
traceback, and nothing written (the "When something is wrong" table of docs/cli.md lists the same cases)."""

import os

import pytest
import torch

from prefalign.cli import main
from tests.conftest import CONFIGS, SYNTHETIC_ARGS

SEED_DPO = [
    "fit",
    "--config",
    str(CONFIGS / "seed_dpo.yaml"),
    *SYNTHETIC_ARGS,
    "--model.backbone.channels=4",
    "--trainer.max_epochs=1",
]


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def _random_bytes(path):
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _pickled_code(path):
    torch.save({"state_dict": {}, "hook": _Payload()}, path)
    return path


# (id, argv builder given (tmp folder, a valid reference), exit code, message)
CASES = [
    (
        "negative batch size",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={ref}", "--data.init_args.batch_size=-5"],
        2,
        "batch_size=-5 is out of range; expected a value in [1, inf)",
    ),
    (
        "validation larger than the data",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={ref}", "--data.init_args.val_size=100000"],
        2,
        "val_size=100000 must be in [0, 600): the training split has only 600 images; lower data.init_args.val_size",
    ),
    (
        "negative beta",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={ref}", "--model.objective.init_args.beta=-1"],
        2,
        "beta=-1.0 is out of range",
    ),
    (
        "PPO group of one",
        lambda d, ref: [
            "fit",
            "--config",
            str(CONFIGS / "ppo.yaml"),
            *SYNTHETIC_ARGS,
            f"--model.reference_ckpt={ref}",
            "--model.objective.init_args.k=1",
        ],
        2,
        "k=1 is out of range",
    ),
    (
        "missing reference, no recipe",
        lambda d, ref: SEED_DPO + ["--reference_recipe=null", "--model.reference_ckpt=missing.pt"],
        2,
        "weights file not found: missing.pt. Train it first",
    ),
    (
        "reference of random bytes",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={_random_bytes(d / 'junk.pt')}"],
        2,
        "is not a readable PyTorch file: corrupt, truncated or of another format",
    ),
    (
        "reference with pickled code",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={_pickled_code(d / 'evil.pt')}"],
        2,
        "refusing to load",
    ),
    (
        "reference of another architecture",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={ref}", "--model.backbone.channels=8"],
        2,
        "but the configured backbone is",
    ),
    (
        "resume from a corrupt checkpoint",
        lambda d, ref: SEED_DPO + [f"--model.reference_ckpt={ref}", f"--ckpt_path={_random_bytes(d / 'last.ckpt')}"],
        2,
        "is not a readable PyTorch file",
    ),
    (
        "unknown objective",
        lambda d, ref: (
            SEED_DPO + [f"--model.reference_ckpt={ref}", "--model.objective=prefalign.objectives.NoSuchLoss"]
        ),
        2,
        "--model.objective: cannot use class_path prefalign.objectives.NoSuchLoss",
    ),
    (
        "dream on a missing file",
        lambda d, ref: ["dream", "--ckpt", "missing.pt"],
        2,
        "prefalign dream: error: weights file not found: missing.pt",
    ),
    (
        "generate from a classifier",
        lambda d, ref: ["generate", "--ckpt", str(ref), "--prompt", "To be", "--out", str(d / "o.jsonl")],
        2,
        "not a trained language model (no vocabulary)",
    ),
    (
        "generate from an empty prompts file",
        lambda d, ref: [
            "generate",
            "--ckpt",
            str(_lm(d)),
            "--prompts_file",
            str(_empty(d)),
            "--out",
            str(d / "o.jsonl"),
        ],
        2,
        "holds no prompts",
    ),
    (
        "prompt with unknown characters",
        lambda d, ref: ["generate", "--ckpt", str(_lm(d)), "--prompt", "abZ", "--out", str(d / "o.jsonl")],
        2,
        "prompt 1 has 1 character(s) outside the model's 3-character vocabulary: 'Z'",
    ),
    (
        "prompt longer than the block",
        lambda d, ref: ["generate", "--ckpt", str(_lm(d)), "--prompt", "abc" * 3, "--out", str(d / "o.jsonl")],
        2,
        "prompt 1 is 9 characters long, more than the model's block of 8",
    ),
    (
        "LM data block longer than the model's",
        lambda d, ref: [
            "fit",
            "--config",
            str(CONFIGS / "lm_pretrain.yaml"),
            "--data.init_args.source=synthetic",
            "--data.init_args.block_size=128",
        ],
        2,
        "data.init_args.block_size=128 is longer than the model's block_size=64",
    ),
    (
        "LM data and model tokenizers differ",
        lambda d, ref: [
            "fit",
            "--config",
            str(CONFIGS / "lm_pretrain.yaml"),
            "--data.init_args.source=synthetic",
            "--data.init_args.tokenizer=gpt2",
        ],
        2,
        "uses the char tokenizer but the data uses gpt2 (data.init_args.tokenizer)",
    ),
    (
        "sample from a classifier",
        lambda d, ref: ["sample", "--ckpt", str(ref), "--out", str(d / "s.pt")],
        2,
        "holds a prefalign.models.SeedCNN, not a trained denoiser (it records no noise schedule)",
    ),
    (
        "sample with zero steps",
        lambda d, ref: ["sample", "--ckpt", str(_denoiser(d)), "--steps", "0", "--out", str(d / "s.pt")],
        2,
        "--steps=0 must be ≥ 1.",
    ),
    (
        "sample an unknown class",
        lambda d, ref: ["sample", "--ckpt", str(_denoiser(d)), "--classes", "[12]", "--out", str(d / "s.pt")],
        2,
        "--classes [12]: the model knows classes 0..9.",
    ),
    (
        "denoiser given a classifier backbone",
        lambda d, ref: [
            "fit",
            "--config",
            str(CONFIGS / "diffusion_pretrain.yaml"),
            *SYNTHETIC_ARGS,
            "--model.backbone=prefalign.models.LeNet",
        ],
        2,
        "the denoiser family needs a class-conditional denoiser such as prefalign.models.ConditionalUNet",
    ),
]


def _denoiser(folder):
    from prefalign.checkpoint import save_weights
    from prefalign.models import ConditionalUNet

    meta = {"noise_schedule": {"num_timesteps": 10, "kind": "linear", "beta_start": 1e-4, "beta_end": 0.02}}
    return save_weights(ConditionalUNet(channels=(8,), time_dim=8, groups=4), folder / "denoiser.pt", meta)


def _lm(folder):
    from prefalign.checkpoint import save_weights
    from prefalign.data.text import CharTokenizer
    from prefalign.models import TinyTransformer

    model = TinyTransformer(vocab_size=8, d_model=8, n_heads=1, n_layers=1, d_ff=8, block_size=8)
    model.vocab.copy_(CharTokenizer("abc").to_codes(8))
    return save_weights(model, folder / "lm.pt")


def _empty(folder):
    (folder / "empty.txt").write_text("")
    return folder / "empty.txt"


@pytest.mark.parametrize("make_args,code,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_the_fix_and_writes_nothing(
    make_args, code, message, in_tmp, tiny_reference, capsys, monkeypatch
):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    inputs = in_tmp / "inputs"
    inputs.mkdir()
    try:
        got = main(make_args(inputs, tiny_reference))
    except SystemExit as e:  # argparse/jsonargparse usage errors exit by themselves, with their own message
        got = e.code
    err = capsys.readouterr().err
    assert got == code
    assert message in err
    assert "Traceback" not in err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "artifacts").exists() and not (inputs / "o.jsonl").exists()


def test_debug_shows_the_traceback(in_tmp, monkeypatch):
    from prefalign.checkpoint import CheckpointError

    monkeypatch.delenv("PREFALIGN_DEBUG")

    with pytest.raises(CheckpointError, match="missing.pt"):
        main(SEED_DPO + ["--reference_recipe=null", "--model.reference_ckpt=missing.pt", "--debug"])


def test_the_docs_table_lists_exactly_these_cases():
    from tests.conftest import REPO

    text = (REPO / "docs" / "cli.md").read_text()
    table = text.split("**When something is wrong**", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == [c[0] for c in CASES]
