#!/usr/bin/env python
"""prefalign vs the DPO-on-noisy-MNIST notebook vs a minimal plain-PyTorch loop, timed in one run on one machine.

    python scripts/bench.py                      # full: real MNIST, 3 repeats, fp32 and (with bf16 kernels) bf16
    python scripts/bench.py --quick              # smoke: synthetic data, 1 repeat, fp32, seconds
    python scripts/bench.py --repeats 5 --precision bf16 --out benchmarks/

Contenders (each measurement runs in its own subprocess, ``scripts/bench_worker.py``, so each gets its own peak RSS and a
cold start; the notebook's code is in ``scripts/bench_notebook.py``, the report in ``scripts/bench_report.py``):

* ``notebook`` (a) — the DPO-on-noisy-MNIST notebook's loops as written: ``DataLoader`` over ``TensorDataset`` (batch 64),
  the notebook's ``DPODataset`` with per-sample ``__getitem__``, the reference re-run on every DPO step, tqdm,
  ``loss.item()`` per step, fp32, 60k training images. The only changes: data come from prefalign's MNIST cache
  instead of ``tf.keras``, the noise is seeded, and nothing is plotted.
* ``plain`` (b) — a minimal plain-PyTorch loop doing prefalign's work: the same tensors (prefalign's datamodule),
  index-slice batches with the same per-epoch permutation, the same SFT/DPO losses, cached reference log-probs.
* ``prefalign`` (c) — the real CLI (``prefalign.cli.main``) with the repo's configs (``configs/sft.yaml`` then
  ``configs/seed_dpo.yaml``, plus ``configs/trainer/bf16.yaml`` for bf16), only ``trainer.enable_progress_bar=false``
  added. A callback injected into every Trainer times each epoch; validation, test, mining and figure
  logging are timed separately.

All contenders run with the same intra-op thread count (``--threads``, default 1, set with ``torch.set_num_threads``
and ``OMP_NUM_THREADS`` before torch is imported): on a shared 2-core box two OpenMP threads spin-wait whenever
another process holds a core and get many times slower, while one thread degrades gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # the bench_* modules beside this file, also when loaded by path
from bench_report import build_rows, markdown, merge_reports, summarise, targets, write_report  # noqa: E402,F401
from bench_worker import _Clock, _load  # noqa: E402
from reporting import machine_info  # noqa: E402,F401  (the machine description every report uses)

# ----------------------------------------------------------------------------------------------------------- parent


def _worker_env(spec: dict) -> dict:
    return dict(
        os.environ,
        OMP_NUM_THREADS=str(spec["threads"]),
        MKL_NUM_THREADS=str(spec["threads"]),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        WANDB_MODE="offline",
        PYTHONWARNINGS="ignore",
    )


def start_worker(spec: dict, tmp: Path, cpu: int | None = None) -> tuple[subprocess.Popen, _Clock]:
    """Start one measurement in its own process (pinned to core ``cpu`` when given)."""
    tmp.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = tmp / "spec.json", tmp / "result.json"
    spec_path.write_text(json.dumps(spec))
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    out = open(tmp / "output.log", "w")
    clock = _Clock()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "bench_worker.py"), str(spec_path), str(out_path)],
        cwd=spec.get("workdir", tmp),
        env=_worker_env(spec),
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=pin,
    )
    out.close()  # the child holds its own handle
    return proc, clock


def finish_worker(spec: dict, tmp: Path, proc: subprocess.Popen, clock: _Clock, log) -> dict:
    if proc.wait() != 0:
        tail = (tmp / "output.log").read_text()[-3000:]
        raise RuntimeError(f"worker {spec['contender']}/{spec['task']} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads((tmp / "result.json").read_text())
    result["process_wall"] = time.perf_counter() - clock.wall
    log(
        f"  {spec['name']:<28} {result['process_wall']:7.1f} s   rss {result['rss_mb']:6.0f} MB   load {result['load_start']} -> {result['load_end']}"
    )
    return result


def run_worker(spec: dict, tmp: Path, log) -> dict:
    return finish_worker(spec, tmp, *start_worker(spec, tmp), log)


def run_pair(specs: list[dict], dirs: list[Path], rep: int, log) -> list[dict]:
    """Two measurements at once, each pinned to its own core, the cores swapped every repeat: both see the same
    machine. On a shared host whose speed drifts by 2x within minutes (seen here), a ratio of two runs made minutes
    apart measures the drift; two runs side by side, one core each, share it."""
    started = [start_worker(spec, d, cpu=(i + rep) % 2) for i, (spec, d) in enumerate(zip(specs, dirs))]
    return [finish_worker(spec, d, proc, clock, log) for spec, d, (proc, clock) in zip(specs, dirs, started)]


def paired_names(pair_with: str = "notebook") -> tuple[str, str]:
    """The measurements --concurrent runs side by side: prefalign's fp32 pipeline (first: the DPO-only runs reuse its
    reference) and the notebook's, or the plain loop's (``--pair-with plain``, for the per-epoch targets)."""
    return ("prefalign pipeline fp32", f"{pair_with} pipeline fp32")


def paired_ratios(results: list[dict], other: str = "notebook") -> list[float]:
    """``other``'s wall ÷ prefalign's wall of each repeat's side-by-side pair."""
    by_repeat: dict[int, dict[str, float]] = {}
    for r in results:
        if r["spec"].get("concurrent"):
            by_repeat.setdefault(r["spec"]["repeat"], {})[r["spec"]["contender"]] = r["wall"]
    return [p[other] / p["prefalign"] for _, p in sorted(by_repeat.items()) if {"prefalign", other} <= set(p)]


def wait_for_quiet(limit: float, max_wait: float, log) -> list[float]:
    waited = 0.0
    while os.getloadavg()[0] > limit and waited < max_wait:
        log(f"load average {_load()} > {limit}: waiting 60 s ({waited / 60:.0f}/{max_wait / 60:.0f} min)")
        time.sleep(60)
        waited += 60
    return _load()


def plan(args) -> list[dict]:
    """The measurements of one repeat, in run order (the prefalign pipeline first: the DPO-only runs reuse its reference)."""
    base = {
        "threads": args.threads,
        "source": "synthetic" if args.quick else "mnist",
        "synthetic_size": [600, 200],
        "val_size": 100 if args.quick else 5000,
        "sft_epochs": 2,
        "dpo_epochs": 5,
        "dpo_only_batches": None if args.quick else args.dpo_only_batches,
    }
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if args.quick:  # a smoke test: figures (matplotlib, ~1 s per call) would dominate the tiny runs
        base["extra_args"] = ["--model.log_figures=false"]
    specs = []
    for p in precisions:
        specs.append(
            {**base, "name": f"prefalign pipeline {p}", "contender": "prefalign", "task": "pipeline", "precision": p}
        )
    specs.append(
        {**base, "name": "notebook pipeline fp32", "contender": "notebook", "task": "pipeline", "precision": "fp32"}
    )
    for p in precisions:
        short = (
            {} if (args.quick or args.full_plain) else {"sft_epochs": 1, "dpo_epochs": 2, "short": True}
        )  # ~25 min budget
        specs.append(
            {
                **base,
                "name": f"plain pipeline {p}",
                "contender": "plain",
                "task": "pipeline",
                "precision": p,
                "mallopt": not args.plain_default_malloc,
                **short,
            }
        )
    for p in precisions:
        specs.append(
            {
                **base,
                "name": f"prefalign dpo recompute {p}",
                "contender": "prefalign",
                "task": "dpo_recompute",
                "precision": p,
                "recompute": True,
                "dpo_epochs": args.dpo_only_epochs,
            }
        )
    for p in precisions if args.compile else []:
        specs.append(
            {
                **base,
                "name": f"prefalign dpo eager {p}",
                "contender": "prefalign",
                "task": "dpo_eager",
                "precision": p,
                "recompute": False,
                "dpo_epochs": args.dpo_only_epochs + 1,
                "drop_first_epoch": True,
            }
        )
        specs.append(
            {
                **base,
                "name": f"prefalign dpo compile {p}",
                "contender": "prefalign",
                "task": "dpo_compile",
                "precision": p,
                "recompute": False,
                "compile": True,
                "dpo_epochs": args.dpo_only_epochs + 1,
                "drop_first_epoch": True,
            }
        )
    if args.only:
        specs = [s for s in specs if any(word in s["name"] for word in args.only)]
    return specs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="synthetic data (600/200 images), 1 repeat: a smoke test")
    ap.add_argument(
        "--repeats", type=int, default=None, help="repeats of every measurement (default 3; 1 with --quick)"
    )
    ap.add_argument(
        "--precision",
        choices=["fp32", "bf16", "both"],
        default=None,
        help="default both where the CPU has bf16 kernels, else fp32 (fp32 with --quick)",
    )
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every contender (default 1)")
    ap.add_argument(
        "--dpo-only-epochs", type=int, default=1, help="epochs of the recompute-reference (and compile) DPO runs"
    )
    ap.add_argument(
        "--dpo-only-batches",
        type=int,
        default=150,
        help="training batches per epoch of those runs (full mode; 0 = all)",
    )
    ap.add_argument(
        "--full-plain",
        action="store_true",
        help="run the plain loop's full pipeline too (default in full mode: "
        "1 SFT + 2 DPO epochs, for the epoch rows; saves ~4 min per repeat)",
    )
    ap.add_argument(
        "--plain-default-malloc",
        action="store_true",
        help="run the plain loop with glibc's default malloc "
        "thresholds (by default it gets the same ones prefalign's CLI sets, so 'vs plain' measures the framework)",
    )
    ap.add_argument(
        "--concurrent",
        action="store_true",
        help="run the fp32 pipelines of prefalign and the notebook side by side, one core each (cores swapped every "
        "repeat), so both see the same machine; the pipeline target then uses the median of the per-repeat ratios",
    )
    ap.add_argument(
        "--pair-with",
        choices=["notebook", "plain"],
        default="notebook",
        help="with --concurrent: prefalign's side-by-side partner; plain (with --full-plain) times the epoch targets "
        "against the plain loop in the same minutes",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time DPO runs with model.compile=true (compilation excluded from the epoch time)",
    )
    ap.add_argument(
        "--reference",
        help="reference weights + --pairs cache dir for the DPO-only runs (default: this repeat's prefalign pipeline's)",
    )
    ap.add_argument("--pairs", help="mined-pairs cache folder matching --reference")
    ap.add_argument("--out", default=str(REPO / "benchmarks"), help="folder for latest.json / latest.md")
    ap.add_argument(
        "--wait-load",
        type=float,
        default=None,
        help="wait until the 1-min load average is below this (default 1.5; off with --quick)",
    )
    ap.add_argument(
        "--max-wait", type=float, default=1200, help="give up waiting for a quiet machine after this many seconds"
    )
    ap.add_argument(
        "--only", nargs="+", help="run only the measurements whose name contains one of these words (development)"
    )
    ap.add_argument(
        "--merge",
        nargs=2,
        metavar=("BASE_JSON", "OVERRIDE_JSON"),
        help="write a report from BASE's raw results "
        "with every measurement that OVERRIDE also has taken from OVERRIDE (e.g. a re-run of one contender)",
    )
    args = ap.parse_args(argv)
    if args.merge:
        return merge_reports(*args.merge, Path(args.out))
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.precision is None:
        from prefalign.precision import cpu_has_bf16_kernels

        # Without bf16 kernels (AVX2 only) bf16 is many times slower than fp32 and prefalign runs such recipes in fp32.
        args.precision = "both" if not args.quick and cpu_has_bf16_kernels() else "fp32"
    wait = args.wait_load if args.wait_load is not None else (None if args.quick else 1.5)
    command = "python scripts/bench.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    if wait:
        wait_for_quiet(wait, args.max_wait, log)
    load_start, t0 = _load(), time.perf_counter()
    log(
        f"bench: {'quick' if args.quick else 'full'}, {args.repeats} repeat(s), precision {args.precision}, {args.threads} thread(s); load {load_start}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="prefalign-bench-"))
    results = []
    try:
        for rep in range(args.repeats):
            log(f"repeat {rep + 1}/{args.repeats}")
            shared: dict = {"reference": args.reference, "pairs": args.pairs} if args.reference else {}
            specs = plan(args)
            pair_names = paired_names(args.pair_with)
            paired = [s for s in specs if s["name"] in pair_names] if args.concurrent else []
            if len(paired) == 2:
                dirs = [scratch / f"r{rep}-pair{i}" for i in range(2)]
                for d in dirs:
                    d.mkdir(parents=True)
                pair = [{**spec, "workdir": str(d), "repeat": rep, "concurrent": True} for spec, d in zip(paired, dirs)]
                results += run_pair(pair, dirs, rep, log)
                shared = shared or {"reference": str(dirs[0] / "ref.pt"), "pairs": str(dirs[0] / "pairs")}
                specs = [s for s in specs if s["name"] not in pair_names]
            for i, spec in enumerate(specs):
                work = scratch / f"r{rep}-{i}"
                work.mkdir(parents=True)
                spec = {**spec, "workdir": str(work), "repeat": rep}
                if spec["task"] != "pipeline" and shared:
                    spec.update(reference=shared["reference"], pairs=shared["pairs"])
                r = run_worker(spec, work, log)
                if spec["contender"] == "prefalign" and spec["task"] == "pipeline" and "reference" not in shared:
                    shared = {"reference": str(work / "ref.pt"), "pairs": str(work / "pairs")}
                results.append(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    s = summarise(results)
    rows, pipes = build_rows(s, precisions)
    report = {
        "command": command,
        "quick": args.quick,
        "plain_default_malloc": args.plain_default_malloc,
        "plain_short": not (args.quick or args.full_plain),
        "dpo_only_batches": None if args.quick else args.dpo_only_batches,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(args.threads),
        "repeats": args.repeats,
        "load_start": load_start,
        "load_end": _load(),
        "bench_seconds": time.perf_counter() - t0,
        "rows": rows,
        "pipelines": pipes,
        "summary": s,
        "raw": results,
    }
    report["concurrent"] = args.concurrent
    report["paired_with"] = args.pair_with if args.concurrent else None
    # The pipeline target is against the notebook: only its pairs decide it.
    report["paired_ratios"] = paired_ratios(results) if args.concurrent and args.pair_with == "notebook" else []
    report["targets"] = targets(rows, pipes, precisions, report["paired_ratios"])
    return write_report(report, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
