"""The README's first run: configs/quickstart.yaml, as a new user runs it (W&B on by default, no account, no TTY)."""

from __future__ import annotations

import csv
import json
import re
import time

import pytest

from prefalign.cli import main
from tests.conftest import CONFIGS


def test_quickstart_runs_the_whole_pipeline_and_logs_to_an_offline_wandb_run(
    in_tmp, no_wandb_account, monkeypatch, capsys
):
    pytest.importorskip("wandb")
    from tests.scale.wandb_records import read_run

    monkeypatch.delenv("PREFALIGN_WANDB")  # the default a user gets
    (in_tmp / "configs").symlink_to(CONFIGS)  # the recipe names its reference recipe relative to the repository
    assert main(["fit", "--config", "configs/quickstart.yaml"]) == 0
    out = capsys.readouterr().out

    # SFT wrote the reference, DPO aligned a copy of it and the test split scored both.
    assert (in_tmp / "artifacts/quickstart/reference.pt").is_file()
    folder = in_tmp / "runs/quickstart/version_0"
    results = json.loads((folder / "results_test.json").read_text())
    assert results["metrics"]["test/acc_noisy"] > results["metrics"]["test/reference/acc_noisy"]
    # Off a terminal: one progress line per epoch, with the validation metric and an ETA before the last.
    assert re.search(
        r"^epoch 1/2  step \d+  train/loss [\d.]+  val/acc_noisy [\d.]+  elapsed \dm\d\ds  eta \dm\d\ds$", out, re.M
    ), out
    assert re.search(r"^epoch 2/2  step \d+  .*elapsed \dm\d\ds$", out, re.M), out
    # The CSV side is still there for scripts: metrics and the per-class table.
    with open(folder / "metrics.csv") as f:
        assert "test/acc_noisy" in next(csv.reader(f))
    table = next((folder / "tables").glob("test_per_class_accuracy_step*.csv"))
    assert (
        table.read_text().splitlines()[0] == "class,acc_clean,acc_noisy" and len(table.read_text().splitlines()) == 11
    )

    # And W&B: one offline run for the reference, one for the alignment, each with the config, metrics, a table
    # and images, as `wandb sync` would upload them.
    runs = sorted((in_tmp / "runs/wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    run_dir = runs[-1]
    deadline = time.monotonic() + 30
    while (run := read_run(next(run_dir.glob("run-*.wandb"))))["exit_code"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run["exit_code"] == 0
    assert run["config"]["model.objective.class_path"] == "prefalign.objectives.RPO"
    assert run["config"]["data.init_args.source"] == "synthetic"
    logged = {}
    for row in run["history"]:
        logged.update(row)
    assert logged["test/acc_noisy"] == pytest.approx(results["metrics"]["test/acc_noisy"], abs=1e-6)
    assert logged["test/per_class_accuracy/_type"] == "table-file"
    assert (run_dir / "files" / logged["test/per_class_accuracy/path"]).is_file()
    assert logged["test/confusion_noisy/_type"] == "images/separated"
    for filename in logged["test/confusion_noisy/filenames"]:
        assert (run_dir / "files" / filename).is_file()
