"""scripts/hf_recipe_results.py: its numbers come from the runs' logged metrics and GNU time's report."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

TIME_LOG = """\tCommand being timed: "python -m prefalign fit --config configs/hf_shakespeare_dpo.yaml"
\tUser time (seconds): 800.50
\tSystem time (seconds): 20.25
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5
\tMaximum resident set size (kbytes): 2048000
\tExit status: 0
"""


def load():
    spec = importlib.util.spec_from_file_location("hf_recipe_results", REPO / "scripts/hf_recipe_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_log_is_parsed():
    t = load().parse_time_log(TIME_LOG)
    assert t == {"wall_seconds": 3723.5, "peak_rss_mb": 2000.0, "cpu_seconds": 820.75, "exit_status": 0}


def test_block_from_the_logged_metrics(tmp_path):
    script = load()
    pre = tmp_path / "runs/hf_shakespeare_pretrain/version_0"
    dpo = tmp_path / "runs/hf_shakespeare_dpo/version_0"
    pre.mkdir(parents=True)
    dpo.mkdir(parents=True)
    (pre / "metrics.csv").write_text("epoch,step,train/loss,val/loss,val/valid_words\n0,9,4.0,,\n0,9,,3.5,0.8\n")
    (dpo / "metrics.csv").write_text("epoch,step,mining/pairs,mining/pool_size\n0,0,30,40\n")
    metrics = {
        "test/loss": 3.57,
        "test/reference/loss": 3.5,
        "test/valid_words": 0.85,
        "test/reference/valid_words": 0.8,
        "test/real/valid_words": 0.95,
        "test/distinct_2": 1.0,
    }
    (dpo / "results_test.json").write_text(json.dumps({"metrics": metrics, "global_step": 7, "objective": "RPO"}))
    (tmp_path / script.TIME_LOG).write_text(TIME_LOG)
    r = script.collect(tmp_path)
    assert r["pretrain"] == {"val_loss": 3.5, "valid_words": 0.8, "steps": 10}
    assert r["loss_vs_reference"] == pytest.approx(0.02) and r["mining"] == {"pairs": 30.0, "pool_size": 40.0}
    text = script.block(r)
    assert "| 3.5700 | +2.0% | 0.850 |" in text and "| 3.5000 | — | 0.800 |" in text
    assert "62.1 minutes" in text and "budget: NO" in text  # over 20 minutes is said, not hidden
