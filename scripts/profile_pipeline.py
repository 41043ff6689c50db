#!/usr/bin/env python
"""Where a whole ``fit`` process spends its time: a sampling profile (py-spy) of one run, sorted into phases.

    python scripts/profile_pipeline.py                      # configs/seed_dpo.yaml from scratch (trains its reference)
    python scripts/profile_pipeline.py --config configs/dpo.yaml --rate 50
    python scripts/profile_pipeline.py --from-raw prof.raw  # re-sort an earlier profile

The run is ``python -m prefalign fit --config CONFIG --wandb=false --trainer.enable_progress_bar=false`` in a fresh
temporary folder (no reference, no pair cache: what a first run does), one intra-op thread, sampled ``--rate`` times
a second by ``py-spy record`` (``pip install py-spy``; in the ``dev`` extra). Every sample's Python stack goes to the
first phase of :data:`PHASES` whose markers it contains, so the phases add up to the whole process. Sampling pauses
the process briefly, so the profiled run is a little slower than an unprofiled one: read the shares, and time runs
with ``scripts/bench.py``. Writes ``benchmarks/profile.{json,md}`` and the ``profile`` block of
``docs/performance.md``.
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
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO

#: (phase, markers): a sample belongs to the first phase with a marker in its stack (frames joined by ";").
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("figures (matplotlib)", ("savefig", "FilterPlot", "log_figure")),
    ("test (policy and reference, both views)", ("Trainer.test",)),
    ("validation", ("_EvaluationLoop.run",)),
    ("mining (the reference over the training images)", ("reference_log_probs", "._mine")),
    ("data (MNIST load, noise)", ("_call_lightning_datamodule_hook", "NoisyMNISTDataModule.setup")),
    ("optimizer step (Adam's arithmetic)", ("_fused_adam", "_multi_tensor_adam", "_single_tensor_adam")),
    ("backward", ("_engine_run_backward",)),
    ("training forward and loss", ("training_step",)),
    ("training loop bookkeeping (Lightning, batches, hooks)", ("_TrainingEpochLoop.run",)),
    ("imports", ("_find_and_load",)),
    ("checkpoints and weights files", ("save_checkpoint", "save_weights")),
]
OTHER = "other (CLI parsing, trainer set-up, model summary)"


def categorise(raw: str) -> dict[str, int]:
    """Samples per phase from py-spy's raw (collapsed-stack) output: ``frame;frame;... count`` per line."""
    counts: Counter = Counter()
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        phase = next((name for name, keys in PHASES if any(k in stack for k in keys)), OTHER)
        counts[phase] += int(n)
    return dict(counts)


def markdown(report: dict) -> str:
    total = sum(report["samples"].values())
    m = report["machine"]
    lines = [
        f"Command: `{report['command']}`, {report['date']}.",
        "",
        f"Machine: {reporting.describe_machine(m)} (CPU capability {m['cpu_capability']}); one intra-op thread. "
        f"Profiled: `python -m prefalign fit --config {report['config']}` from a folder with no reference and no pair "
        f"cache, sampled {report['rate']} times a second by py-spy ({total} samples"
        + (f"; the profiled process took {report['wall_s']:.1f} s" if report.get("wall_s") else "")
        + ").",
        "",
        "| phase | seconds | share |",
        "|---|---:|---:|",
    ]
    for name, n in sorted(report["samples"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {n / report['rate']:.1f} | {100 * n / total:.0f}% |")
    lines += ["", "Each sample counts for the first phase (in the script's order) found in its Python stack."]
    return "\n".join(lines) + "\n"


def record(config: str, rate: int, threads: int, raw_path: Path) -> float:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("profile_pipeline: py-spy is not installed; `pip install py-spy` (it is in the dev extra).")
    work = Path(tempfile.mkdtemp(prefix="prefalign-profile-"))
    try:
        (work / "configs").symlink_to(REPO / "configs")
        env = dict(
            os.environ,
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            WANDB_MODE="offline",
        )
        command = [spy, "record", "-r", str(rate), "-f", "raw", "-o", str(raw_path), "--", sys.executable]
        command += [
            "-m",
            "prefalign",
            "fit",
            "--config",
            config,
            "--wandb=false",
            "--trainer.enable_progress_bar=false",
        ]
        start = time.perf_counter()
        with open(work / "output.log", "w") as out:
            done = subprocess.run(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = (work / "output.log").read_text()[-2000:]
            raise SystemExit(f"profile_pipeline: the profiled run failed (exit {done.returncode}):\n{tail}")
        return wall
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/seed_dpo.yaml", help="the recipe to profile (a path under configs/)")
    ap.add_argument("--rate", type=int, default=100, help="samples a second")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the profiled run")
    ap.add_argument("--from-raw", help="sort this py-spy raw file instead of recording a new run")
    ap.add_argument("--out", default=str(REPO / "benchmarks"), help="folder for profile.json / profile.md")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = Path(args.from_raw) if args.from_raw else out / "profile.raw"
    wall = None if args.from_raw else record(args.config, args.rate, args.threads, raw_path)
    report = {
        "command": "python scripts/profile_pipeline.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "config": args.config,
        "rate": args.rate,
        "wall_s": wall,
        "machine": reporting.machine_info(args.threads),
        "samples": categorise(raw_path.read_text()),
    }
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (out / "profile.md").write_text(md)
    reporting.write_block("profile", md, REPO)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
