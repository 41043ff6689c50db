"""scripts/hf_recipe_results.py and hf_grpo_recipe_results.py: their numbers come from the runs' logged metrics and GNU time's report."""

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


def load_grpo():
    spec = importlib.util.spec_from_file_location("hf_grpo_recipe_results", REPO / "scripts/hf_grpo_recipe_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grpo_run(root, valid_words: float, loss: float, name: str = "hf_shakespeare_grpo/version_0"):
    import yaml

    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train/reward,val/loss\n0,9,0.80,\n0,19,0.90,\n0,19,,3.6\n")
    config = yaml.safe_load((REPO / "configs/hf_shakespeare_grpo.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "test/loss": loss,
        "test/reference/loss": 3.5,
        "test/valid_words": valid_words,
        "test/reference/valid_words": 0.8,
        "test/real/valid_words": 0.96,
        "test/distinct_2": 1.0,
    }
    results = {"metrics": metrics, "global_step": 20, "objective": "PPOLite", "fit_seconds": 300.0}
    (run / "results_test.json").write_text(json.dumps(results))


def test_grpo_block_states_each_part_of_the_bar_from_the_logged_metrics(tmp_path):
    script = load_grpo()
    grpo_run(tmp_path, valid_words=0.92, loss=3.57)
    (tmp_path / script.TIME_LOGS["clean"]).write_text(TIME_LOG)  # 62.1 minutes
    (tmp_path / script.TIME_LOGS["reused"]).write_text(TIME_LOG.replace("1:02:03.5", "9:30"))
    r = script.collect(tmp_path)
    assert r["target_valid_words"] == pytest.approx(0.88) and r["gap_closed"] == pytest.approx(0.75)
    assert r["train_reward"] == {"first": (9, 0.8), "last": (19, 0.9)} and r["settings"]["k"] >= 2
    text = script.block(r)
    assert "| 3.5700 | +2.0% | 0.920 |" in text and "| 3.5000 | — | 0.800 |" in text and "| — | — | 0.960 |" in text
    assert "(0.880): yes (75% of the gap closed)" in text
    assert (
        "**9.5 minutes** (13.7 CPU-minutes, peak memory 2000 MB; its fit, training and validation: 5.0 minutes)" in text
    )
    assert "within +5% of the reference's: yes (+2.0%)" in text
    assert "within 20 minutes: yes (9.5 minutes; with the base model's pretraining 62.1: NO)" in text
    assert "Tuning" not in text  # no tuning runs: no table


def test_grpo_tuning_table_has_one_row_per_tuning_run_each_beside_its_reference(tmp_path):
    script = load_grpo()
    grpo_run(tmp_path, valid_words=0.92, loss=3.57)
    grpo_run(tmp_path, valid_words=0.85, loss=3.57, name="hf_shakespeare_grpo_tuning/version_0")
    grpo_run(tmp_path, valid_words=0.95, loss=3.8, name="hf_shakespeare_grpo_tuning/version_1")
    r = script.collect(tmp_path)
    assert [t["run"] for t in r["tuning"]] == [
        "runs/hf_shakespeare_grpo_tuning/version_0",
        "runs/hf_shakespeare_grpo_tuning/version_1",
    ]
    rows = script.block(r).split("| steps | lr | kl_coef |")[1].splitlines()[2:]
    assert rows[0].endswith("| 0.850 (0.800) | 31% | +2.0% | NO |")  # the rate's half of the bar missed
    assert rows[1].endswith("| 0.950 (0.800) | 94% | +8.6% | NO |")  # the loss's half missed


def test_grpo_block_says_no_where_the_bar_is_missed(tmp_path):
    script = load_grpo()
    grpo_run(tmp_path, valid_words=0.85, loss=3.8)
    text = script.block(script.collect(tmp_path))
    assert "(0.880): NO (31% of the gap closed)" in text and "+5% of the reference's: NO (+8.6%)" in text
    assert "within 20 minutes: not measured." in text
