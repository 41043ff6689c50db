"""Paths a run writes and config files it reads, checked before any work: one line naming the setting and the fix,
exit code 2, and nothing written (no reference trained, no pairs mined, no run folder)."""

from __future__ import annotations

import pytest

from prefalign.cli import main
from prefalign.preflight import unwritable_reason
from tests.conftest import CONFIGS, SYNTHETIC_ARGS

# The quickstart recipe: its reference is trained first when missing (configs/quickstart_reference.yaml).
QUICKSTART = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), *SYNTHETIC_ARGS, "--model.backbone.channels=4"]


def _file(folder):
    (folder / "a_file").write_text("not a folder")
    return folder / "a_file"


def _binary(folder):
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00yaml")
    return folder / "binary.yaml"


def _bad_yaml(folder):
    (folder / "bad.yaml").write_text("trainer:\n  max_epochs: 2\n  logger: [unclosed\nmodel: {}\n")
    return folder / "bad.yaml"


# (title, argv builder given (tmp folder, a valid reference), message); the docs table lists the same cases.
CASES = [
    (
        "reference path is a folder",
        lambda d, ref: QUICKSTART + [f"--model.reference_ckpt={d}"],
        "--model.reference_ckpt={d} is a folder; give a file path such as {d}/weights.pt.",
    ),
    (
        "reference to train in an unwritable folder",
        lambda d, ref: QUICKSTART + ["--model.reference_ckpt=/proc/prefalign/reference.pt"],
        "--model.reference_ckpt=/proc/prefalign/reference.pt cannot be written: cannot create files in /proc (No such file or directory). "
        "Set --model.reference_ckpt to a file in a writable folder.",
    ),
    (
        "pair cache in a read-only folder",
        lambda d, ref: QUICKSTART + [f"--model.reference_ckpt={ref}", "--data.init_args.cache_dir=/sys/pairs"],
        "--data.init_args.cache_dir=/sys/pairs cannot be written: cannot create files in /sys (Permission denied). "
        "Set --data.init_args.cache_dir to a writable folder.",
    ),
    (
        "pair cache in an unwritable folder",
        lambda d, ref: QUICKSTART + [f"--model.reference_ckpt={ref}", "--data.init_args.cache_dir=/proc/pairs"],
        "--data.init_args.cache_dir=/proc/pairs cannot be written: cannot create files in /proc (No such file or directory).",
    ),
    (
        "pair cache under a file",
        lambda d, ref: QUICKSTART + [f"--model.reference_ckpt={ref}", f"--data.init_args.cache_dir={_file(d)}/pairs"],
        "--data.init_args.cache_dir={d}/a_file/pairs cannot be written: {d}/a_file is a file, not a folder.",
    ),
    (
        "run folder unwritable",
        lambda d, ref: QUICKSTART + [f"--model.reference_ckpt={ref}", "--trainer.logger.init_args.save_dir=/proc/runs"],
        "--trainer.logger.init_args.save_dir=/proc/runs cannot be written: cannot create files in /proc (No such file or directory). "
        "Set --trainer.logger.init_args.save_dir to a writable folder.",
    ),
    (
        "run folder unwritable, no logger",
        lambda d, ref: (
            QUICKSTART
            + [f"--model.reference_ckpt={ref}", "--trainer.logger=false", "--trainer.default_root_dir=/proc/runs"]
        ),
        "--trainer.default_root_dir=/proc/runs cannot be written",
    ),
    (
        "export path is a folder",
        lambda d, ref: QUICKSTART + [f"--model.reference_ckpt={ref}", f"--model.export_path={d}"],
        "--model.export_path={d} is a folder; give a file path such as {d}/weights.pt.",
    ),
    (
        "config file that is not YAML",
        lambda d, ref: ["fit", "--config", str(_bad_yaml(d))],
        "--config {d}/bad.yaml is not valid YAML: expected ',' or ']', but got ':' at line 4, column 6.",
    ),
    (
        "config file is binary",
        lambda d, ref: ["fit", "--config", str(_binary(d))],
        "--config {d}/binary.yaml is not a text file; give a YAML config.",
    ),
]


@pytest.mark.parametrize("make_args,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unwritable_path_or_bad_config_file_is_one_line_before_any_work(
    make_args, message, in_tmp, tiny_reference, capsys, monkeypatch
):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    inputs = in_tmp / "inputs"
    inputs.mkdir()
    (in_tmp / "configs").symlink_to(CONFIGS)  # the quickstart names its reference recipe relative to the repository
    args = make_args(inputs, tiny_reference)
    before = sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message.format(d=inputs) in err
    assert err.startswith("prefalign: error: ") and len(err.strip().splitlines()) == 1
    after = sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*"))
    assert after == before  # no reference, no pairs, no run folder, no lock file


def test_a_writable_folder_passes_and_the_check_leaves_nothing_behind(tmp_path):
    assert unwritable_reason(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []
