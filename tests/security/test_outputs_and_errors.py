"""Issue #22's silent data loss and error items for generate, sample and dream: every output path is checked before
any work, a refusal is one line naming the setting, and nothing is written (no output, no stray temporary file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from prefalign.checkpoint import save_weights
from prefalign.cli import main
from prefalign.output_paths import OutputPathError, check_outputs, write_text_atomically
from tests.conftest import CONFIGS, SYNTHETIC_ARGS


@pytest.fixture
def files(in_tmp):
    """A char LM, a denoiser and a classifier weights file, and a prompts file, in an otherwise empty folder."""
    from prefalign.data.text import CharTokenizer
    from prefalign.models import ConditionalUNet, SeedCNN, TinyTransformer

    lm = TinyTransformer(vocab_size=8, d_model=8, n_heads=1, n_layers=1, d_ff=8, block_size=8)
    lm.vocab.copy_(CharTokenizer("abc").to_codes(8))
    meta = {"noise_schedule": {"num_timesteps": 10, "kind": "linear", "beta_start": 1e-4, "beta_end": 0.02}}
    (in_tmp / "prompts.txt").write_text("ab\n")
    (in_tmp / "o").mkdir()
    return {
        "lm": save_weights(lm, in_tmp / "lm.pt"),
        "den": save_weights(ConditionalUNet(channels=(8,), time_dim=8, groups=4), in_tmp / "den.pt", meta),
        "cnn": save_weights(SeedCNN(channels=4), in_tmp / "cnn.pt"),
        "prompts": in_tmp / "prompts.txt",
    }


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


GEN = ["generate", "--ckpt", "lm.pt", "--max_new_tokens", "2"]
CASES = [
    (
        "sample --out a .png",
        ["sample", "--ckpt", "den.pt", "--out", "o/samples.png"],
        "--out o/samples.png: sample writes a tensor file",
    ),
    ("sample --out the input", ["sample", "--ckpt", "den.pt", "--out", "den.pt"], "--out den.pt is the input --ckpt"),
    ("sample --out a folder", ["sample", "--ckpt", "den.pt", "--out", "o"], "--out o is a folder"),
    ("generate --out a folder", [*GEN, "--prompt", "ab", "--out", "o"], "--out o is a folder"),
    ("generate --out the input", [*GEN, "--prompt", "ab", "--out", "lm.pt"], "--out lm.pt is the input --ckpt"),
    (
        "generate --out the prompts file",
        [*GEN, "--prompts_file", "prompts.txt", "--out", "prompts.txt"],
        "is the input --prompts_file",
    ),
    (
        "generate --out a link to the input",
        [*GEN, "--prompt", "ab", "--out", "link.pt"],
        "--out link.pt is the input --ckpt",
    ),
    (
        "generate --out under a file",
        [*GEN, "--prompt", "ab", "--out", "lm.pt/x.jsonl"],
        "lm.pt is a file, so the folder",
    ),
    (
        "generate --top_k 0",
        [*GEN, "--prompt", "ab", "--top_k", "0", "--out", "x.jsonl"],
        "--top_k=0 must be ≥ 1 (or null",
    ),
    ("generate --top_k -2", [*GEN, "--prompt", "ab", "--top_k", "-2", "--out", "x.jsonl"], "--top_k=-2 must be ≥ 1"),
    (
        "generate --device bogus",
        [*GEN, "--prompt", "ab", "--device", "bogus", "--out", "x.jsonl"],
        "--device 'bogus' is not a device",
    ),
    (
        "generate --prompts_file missing",
        [*GEN, "--prompts_file", "missing.txt", "--out", "x.jsonl"],
        "--prompts_file missing.txt: no such file; give a text file",
    ),
    (
        "generate --prompts_file a folder",
        [*GEN, "--prompts_file", "o", "--out", "x.jsonl"],
        "--prompts_file o is a folder",
    ),
    (
        "generate --prompts_file binary",
        [*GEN, "--prompts_file", "bin.txt", "--out", "x.jsonl"],
        "--prompts_file bin.txt is not UTF-8 text (byte 0",
    ),
    ("generate --config malformed", ["generate", "--config", "bad.yaml"], "--config bad.yaml is not valid YAML"),
    (
        "generate unknown option",
        [*GEN, "--bogus", "1"],
        "unrecognized arguments: --bogus 1 (see python -m prefalign generate --help)",
    ),
    (
        "dream --out_dir a file",
        ["dream", "--ckpt", "cnn.pt", "--out_dir", "prompts.txt"],
        "--out_dir prompts.txt is a file",
    ),
    (
        "dream sweep values that share files",
        [
            "dream",
            "--ckpt",
            "cnn.pt",
            "--out_dir",
            "d",
            "--sweep_l2",
            "true",
            "--l2_values",
            "[0.1, 0.1000001]",
            "--steps",
            "1",
        ],
        "would both be written to d/l2_0.1_grid.png",
    ),
    ("dream over its own input", ["dream", "--ckpt", "o/dream.gif", "--out_dir", "o"], "is the input --ckpt"),
]


@pytest.mark.parametrize("argv,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_before_any_work_and_nothing_written(argv, message, files, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    (in_tmp / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    (in_tmp / "bad.yaml").write_text("ckpt: [unclosed\n  out: :\n")
    (in_tmp / "link.pt").symlink_to(files["lm"])
    os.link(
        files["cnn"], in_tmp / "o" / "dream.gif"
    )  # an input where dream would write: the same file under another name
    before = _snapshot(in_tmp)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and message in err, err
    assert _snapshot(in_tmp) == before  # no output, no .tmp, no folder, every input intact


def test_an_unwritable_folder_is_refused_before_the_model_loads(files, capsys, monkeypatch):
    """/proc refuses new files even to root (os.access says yes there): the probe file tells."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    monkeypatch.delenv("PREFALIGN_DEBUG")
    monkeypatch.setattr(
        "prefalign.families.language.generate_command.load_model", lambda p: pytest.fail("loaded the model first")
    )
    assert main([*GEN, "--prompt", "ab", "--out", "/proc/x.jsonl"]) == 2
    assert "prefalign generate: error: --out: cannot write in /proc" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(files, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    for command in (
        [*GEN, "--prompt", "ab", "--out", "x.jsonl"],
        ["sample", "--ckpt", "den.pt", "--out", "s.pt"],
        ["dream", "--ckpt", "cnn.pt", "--out_dir", "d"],
    ):
        assert main([*command, "--device", "cuda"]) == 2
        assert (
            "--device cuda: this machine has no CUDA GPU that torch can use; use --device cpu"
            in capsys.readouterr().err
        )


def test_a_failure_after_the_checks_leaves_no_output_and_no_temporary_file(files, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    assert main([*GEN, "--prompt", "abc" * 3, "--out", "o/x.jsonl"]) == 2  # longer than the block: found after loading
    assert "more than the model's block" in capsys.readouterr().err
    assert list((in_tmp / "o").iterdir()) == []


def test_test_with_a_weights_file_as_ckpt_path_names_the_option_that_takes_it(
    in_tmp, tiny_reference, capsys, monkeypatch
):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    args = [
        "test",
        "--config",
        str(CONFIGS / "seed_dpo.yaml"),
        *SYNTHETIC_ARGS,
        "--model.backbone.channels=4",
        f"--model.reference_ckpt={tiny_reference}",
        f"--ckpt_path={tiny_reference}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is a prefalign weights file, not a Lightning checkpoint: give it as --model.reference_ckpt" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_sample_writes_its_tensor_file_and_grid_side_by_side(files, in_tmp):
    assert (
        main(["sample", "--ckpt", "den.pt", "--per_class", "1", "--steps", "1", "--classes", "[3]", "--out", "o/s"])
        == 0
    )
    assert sorted(p.name for p in (in_tmp / "o").iterdir()) == ["s", "s.png"]
    assert torch.load(in_tmp / "o" / "s", weights_only=True)["labels"].tolist() == [3]


def test_check_outputs_refuses_two_outputs_on_one_path(tmp_path):
    with pytest.raises(OutputPathError, match="--a and --b would both be written to"):
        check_outputs({"--a": tmp_path / "x.pt", "--b": tmp_path / "sub" / ".." / "x.pt"})
    assert check_outputs({"--a": tmp_path / "new" / "x.pt"}) == [tmp_path / "new" / "x.pt"]
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_write_text_atomically_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.jsonl"
    target.write_text("old\n")

    def fails(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fails)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomically(target, "new\n")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"] and target.read_text() == "old\n"
    write_text_atomically(target, "new\n")
    assert target.read_text() == "new\n" and oct(target.stat().st_mode & 0o777) != oct(0o600)
