"""scripts/bench.py: the report has every row (fast, on fabricated timings) and ``--quick`` runs end to end (slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from argparse import Namespace

import pytest

from tests.conftest import REPO

TASKS = ("reference SFT epoch", "DPO epoch", "DPO epoch, reference recomputed every step", "mining pass")


def _bench():
    spec = importlib.util.spec_from_file_location("prefalign_bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_result(spec: dict) -> dict:
    phases, counts = {}, {}
    scale = 2.0 if spec["contender"] == "notebook" else (1.05 if spec["contender"] == "prefalign" else 1.0)
    scale *= 0.5 if spec["precision"] == "bf16" else 1.0
    if spec["task"] == "pipeline":
        phases = {
            "data": [1.0],
            "sft_epoch": [20.0 * scale] * 2,
            "mine": [10.0 * scale],
            "dpo_epoch": [8.0 * scale] * 5,
            "test": [2.0],
        }
        counts = {"sft_samples": 55000, "mine_samples": 55000, "pairs": 27000}
    else:
        phases = {"dpo_epoch": [12.0 * scale]}
        counts = {"pairs": 27000}
    phases.update({k + "@cpu": [0.9 * x for x in v] for k, v in list(phases.items())})
    wall = 100.0 * scale
    return {
        "spec": spec,
        "phases": phases,
        "counts": counts,
        "wall": wall,
        "cpu": 0.9 * wall,
        "process_wall": wall + 1,
        "acc": {"policy_noisy": 0.3, "policy_clean": 0.5},
        "rss_mb": 900.0,
        "load_start": [0.5, 0.5, 0.5],
        "load_end": [0.6, 0.5, 0.5],
    }


def test_report_has_every_row_and_target():
    bench = _bench()
    args = Namespace(
        quick=False,
        precision="both",
        threads=1,
        dpo_only_epochs=1,
        dpo_only_batches=150,
        compile=False,
        only=None,
        full_plain=True,
        plain_default_malloc=False,
    )
    results = [_fake_result(spec) for spec in bench.plan(args)]
    summary = bench.summarise(results)
    rows, pipes = bench.build_rows(summary, ["fp32", "bf16"])
    for task in TASKS:
        for precision in ("fp32", "bf16"):
            contenders = {r["contender"] for r in rows if r["task"] == task and r["precision"] == precision}
            expected = {"(c) prefalign"} if "recomputed" in task else {"(b) plain", "(c) prefalign"}
            assert expected <= contenders, (task, precision, contenders)
    assert {(p["contender"], p["precision"]) for p in pipes} == {
        ("(a) notebook", "fp32"),
        ("(b) plain", "fp32"),
        ("(c) prefalign", "fp32"),
        ("(b) plain", "bf16"),
        ("(c) prefalign", "bf16"),
    }
    sft = next(
        r
        for r in rows
        if r["task"] == "reference SFT epoch" and r["contender"] == "(c) prefalign" and r["precision"] == "fp32"
    )
    assert sft["vs_plain"] == pytest.approx(1.05) and sft["speedup_vs_notebook"] == pytest.approx(2.0 / 1.05)
    targets = bench.targets(rows, pipes, ["fp32", "bf16"])
    assert len(targets) == 2 * 3 + 2 * 2  # per precision: 2 overhead + 1 cache; per prefalign pipeline: speed + memory
    report = {
        "command": "python scripts/bench.py",
        "quick": False,
        "date": "today",
        "bench_seconds": 60.0,
        "load_start": [0.5] * 3,
        "load_end": [0.5] * 3,
        "machine": bench.machine_info(1),
        "rows": rows,
        "pipelines": pipes,
        "targets": targets,
    }
    md = bench.markdown(report)
    for task in TASKS:
        assert f"| {task} |" in md
    assert "Full notebook pipeline" in md and "avx512_bf16" in md and "1 intra-op thread" in md


def test_side_by_side_pairs_decide_the_pipeline_target():
    bench = _bench()
    results = []
    for rep, (nb, pa) in enumerate([(300.0, 200.0), (150.0, 90.0), (200.0, 120.0)]):
        for contender, wall in (("notebook", nb), ("prefalign", pa)):
            results.append({"spec": {"contender": contender, "repeat": rep, "concurrent": True}, "wall": wall})
    results.append({"spec": {"contender": "plain", "repeat": 0}, "wall": 50.0})  # not paired: ignored
    ratios = bench.paired_ratios(results)
    assert ratios == pytest.approx([1.5, 150 / 90, 200 / 120])
    pipes = [
        {"contender": "(a) notebook", "precision": "fp32", "acc": {"policy_noisy": 0.1}, "rss_mb": 1.0},
        # medians of the walls alone would give 200 / 120 = 1.67; the pairs' median is 1.67 too, but a lone 1.2 must lose
        {
            "contender": "(c) prefalign",
            "precision": "fp32",
            "acc": {"policy_noisy": 0.1},
            "rss_mb": 1.0,
            "speedup_vs_notebook": 1.2,
            "speedup_vs_notebook_cpu": 1.2,
        },
    ]
    target = next(t for t in bench.targets([], pipes, ["fp32"], ratios) if "pipeline" in t["target"])
    assert target["ok"] and "median of 3 side-by-side pairs: 1.50, 1.67, 1.67" in target["measured"]
    assert not next(t for t in bench.targets([], pipes, ["fp32"], [1.4, 1.45]) if "pipeline" in t["target"])["ok"]
    assert not next(t for t in bench.targets([], pipes, ["fp32"]) if "pipeline" in t["target"])["ok"]  # 1.2 alone


@pytest.mark.slow  # ~4 subprocesses that each import torch + Lightning: ~40-70 s on 2 shared cores
@pytest.mark.parametrize("concurrent", [False, True])
def test_quick_bench_writes_json_and_markdown(tmp_path, concurrent):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--out", str(out)]
        + (["--concurrent"] if concurrent else []),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "latest.json").read_text())
    md = (out / "latest.md").read_text()
    tasks = {r["task"] for r in report["rows"]}
    assert set(TASKS) <= tasks
    assert {p["contender"] for p in report["pipelines"]} == {"(a) notebook", "(b) plain", "(c) prefalign"}
    assert report["machine"]["threads"] == 1 and "avx512_bf16" in report["machine"]["flags"]
    assert all(p["rss_mb"] > 0 and p["seconds"] > 0 for p in report["pipelines"])
    # plain and prefalign learn the same thing: same pairs, same accuracy (identical initialisation and batch order).
    plain, pa = (next(p for p in report["pipelines"] if p["contender"] == c) for c in ("(b) plain", "(c) prefalign"))
    assert plain["counts"]["pairs"] == pa["counts"]["pairs"]
    assert abs(plain["acc"]["policy_noisy"] - pa["acc"]["policy_noisy"]) <= 0.02
    for task in TASKS:
        assert f"| {task} |" in md
    assert report["concurrent"] == concurrent and len(report["paired_ratios"]) == (1 if concurrent else 0)
    assert ("side by side" in md) == concurrent


def test_data_set_up_is_reported_per_process_and_epochs_per_epoch():
    """A process whose second fit reuses the first fit's splits calls set-up twice (1.6 s, then ~0 s): its data cost is
    the sum, where a per-call median would read 0.8 s (or 0 with an even count)."""
    bench = _bench()
    spec = {"name": "prefalign pipeline fp32", "contender": "prefalign", "task": "pipeline", "precision": "fp32"}
    runs = []
    for data in ([1.6, 0.0], [1.8, 0.0], [1.7, 0.0]):
        r = _fake_result(spec)
        r["phases"]["data"] = data
        runs.append(r)
    phases = bench.summarise(runs)["prefalign pipeline fp32"]["phases"]
    assert phases["data"] == pytest.approx(1.7)
    assert phases["dpo_epoch"] == pytest.approx(8.0 * 1.05)  # per epoch, pooled over repeats


def test_pairs_with_the_plain_loop_are_not_read_as_notebook_pairs():
    bench = _bench()
    assert bench.paired_names("plain") == ("prefalign pipeline fp32", "plain pipeline fp32")
    results = [
        {"spec": {"contender": c, "repeat": rep, "concurrent": True}, "wall": w}
        for rep, (pl, pa) in enumerate([(100.0, 110.0), (90.0, 99.0)])
        for c, w in (("plain", pl), ("prefalign", pa))
    ]
    assert bench.paired_ratios(results, "plain") == pytest.approx([100 / 110, 90 / 99])
    assert bench.paired_ratios(results) == []  # no notebook in these pairs: no pipeline verdict from them
