"""Run every objective from the same reference, on the same pairs, with the same budget; write the results table.

    python scripts/compare_objectives.py                 # full MNIST, every row, 2 runs at a time
    python scripts/compare_objectives.py --rows dpo rpo  # a subset
    python scripts/compare_objectives.py --quick         # synthetic data, 1 epoch: a smoke test of the script

Each row is a real ``python -m prefalign fit`` run (subprocess) whose ``results_test.json`` and ``metrics.csv``
are read back. Writes ``docs/results.md``, ``docs/results.json``, ``docs/figures/objectives.png`` and replaces the
table between the ``<!-- results:begin -->`` / ``<!-- results:end -->`` markers in docs/families/classifier.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO
CFG = REPO / "configs"

# Every preference row uses configs/dpo.yaml's pairs (hard negatives on noisy + clean training images, noise
# re-drawn every epoch), optimiser, schedule and epochs; only the objective changes.
PAIRS = ["--config", str(CFG / "dpo.yaml")]


def objective(class_path: str, **init_args) -> list[str]:
    args = [f"--model.objective={class_path}"]
    args += [f"--model.objective.init_args.{k}={v}" for k, v in init_args.items()]
    return args


ROWS: dict[str, tuple[str, list[str]]] = {
    "seed_dpo": (
        "the DPO-on-noisy-MNIST notebook's recipe: DPO β=0.1 on the reference's mistakes (fixed noise)",
        ["--config", str(CFG / "seed_dpo.yaml")],
    ),
    "sft_noisy": (
        "supervised fine-tuning on noisy images (ceiling to beat)",
        ["--config", str(CFG / "sft_noisy.yaml")],
    ),
    "sft_both": (
        "supervised fine-tuning on noisy + clean images",
        ["--config", str(CFG / "sft_noisy.yaml"), "--data.init_args.train_on=both"],
    ),
    "dpo": ("DPO (sigmoid) β=0.1", PAIRS + objective("prefalign.objectives.DPO", beta=0.1)),
    "cdpo": (
        "conservative DPO, label smoothing 0.1",
        PAIRS + objective("prefalign.objectives.DPO", beta=0.1, label_smoothing=0.1),
    ),
    "robust_dpo": (
        "robust DPO, ε=0.1",
        PAIRS + objective("prefalign.objectives.RobustDPO", beta=0.1, label_smoothing=0.1),
    ),
    "ipo": ("IPO τ=0.1", PAIRS + objective("prefalign.objectives.IPO", tau=0.1)),
    "hinge": ("hinge (SLiC) β=0.1", PAIRS + objective("prefalign.objectives.Hinge", beta=0.1)),
    "rpo": ("RPO: DPO + NLL (configs/dpo.yaml)", PAIRS),
    "simpo": (
        "SimPO β=2, γ=0.5 (reference-free)",
        PAIRS + objective("prefalign.objectives.SimPO", beta=2.0, gamma=0.5),
    ),
    "kto": ("KTO β=0.1", PAIRS + objective("prefalign.objectives.KTO", beta=0.1)),
    "orpo": ("ORPO λ=0.1 (reference-free)", PAIRS + objective("prefalign.objectives.ORPO", lam=0.1)),
    "ppo": ("PPO-lite (GRPO-style, k=8, correct-label reward)", ["--config", str(CFG / "ppo.yaml")]),
    "rpo_iterative": (
        "RPO, pairs re-mined by the current policy after every epoch (iterative DPO)",
        PAIRS + ["--trainer.callbacks+=prefalign.callbacks.IterativeMining", "--trainer.callbacks.every_n_epochs=1"],
    ),
    "exo": ("EXO β=0.1, ε=1e-3", PAIRS + objective("prefalign.objectives.EXO", beta=0.1, label_smoothing=0.001)),
    "nca": ("NCA β=0.1", PAIRS + objective("prefalign.objectives.NCA", beta=0.1)),
    "bco": ("BCO β=0.1 (running reward shift)", PAIRS + objective("prefalign.objectives.BCO", beta=0.1)),
    "sppo": ("SPPO (hard) β=0.1", PAIRS + objective("prefalign.objectives.SPPO", beta=0.1)),
    "aot": ("AOT β=0.1 (sorted margins)", PAIRS + objective("prefalign.objectives.AOT", beta=0.1)),
    "aot_pair": ("AOT unpaired β=0.1", PAIRS + objective("prefalign.objectives.AOTPair", beta=0.1)),
    "apo_zero": ("APO-zero β=0.1", PAIRS + objective("prefalign.objectives.APOZero", beta=0.1)),
    "apo_down": ("APO-down β=0.1", PAIRS + objective("prefalign.objectives.APODown", beta=0.1)),
    "discopop": ("DiscoPOP β=0.1, τ=0.05", PAIRS + objective("prefalign.objectives.DiscoPOP", beta=0.1, tau=0.05)),
    "cpo": ("CPO β=0.1, α=1 (reference-free)", PAIRS + objective("prefalign.objectives.CPO", beta=0.1, alpha=1.0)),
    "dpo_js": (
        "f-DPO, Jensen–Shannon, β=0.1",
        PAIRS
        + [
            "--model.objective=prefalign.objectives.FDivergence",
            "--model.objective.init_args.objective=prefalign.objectives.DPO",
            "--model.objective.init_args.divergence=js_divergence",
        ],
    ),
    "dpo_wpo": (
        "WPO-weighted DPO β=0.1",
        PAIRS
        + [
            "--model.objective=prefalign.objectives.WPO",
            "--model.objective.init_args.objective=prefalign.objectives.DPO",
        ],
    ),
    "dpo_reference_free": (
        "DPO β=0.1, reference-free",
        PAIRS
        + [
            "--model.objective=prefalign.objectives.ReferenceFree",
            "--model.objective.init_args.objective=prefalign.objectives.DPO",
        ],
    ),
    "mpo": (
        "weighted sum: 0.8·RPO + 0.2·BCO (MPO style)",
        PAIRS
        + [
            "--model.objective=prefalign.objectives.WeightedSum",
            '--model.objective.init_args.objectives=[{"class_path": "prefalign.objectives.RPO"}, {"class_path": "prefalign.objectives.BCO"}]',
            "--model.objective.init_args.weights=[0.8, 0.2]",
        ],
    ),
    "tr_dpo": (
        "TR-DPO: RPO, reference ← 0.6·policy + 0.4·reference every 512 steps",
        PAIRS
        + [
            "--trainer.callbacks+=prefalign.callbacks.ReferenceUpdate",
            "--trainer.callbacks.alpha=0.6",
            "--trainer.callbacks.every_n_steps=512",
        ],
    ),
    "kto_unpaired": (
        "KTO β=0.1 on unpaired responses",
        PAIRS + objective("prefalign.objectives.KTO", beta=0.1) + ["--data.init_args.unpaired=true"],
    ),
}

QUICK = [
    "--data.init_args.source=synthetic",
    "--data.init_args.synthetic_size=[600, 200]",
    "--data.init_args.val_size=100",
    "--trainer.max_epochs=1",
    "--model.backbone.channels=4",
]


def run_row(name: str, args: list[str], out_root: Path, extra: list[str], env: dict) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "prefalign",
        "fit",
        *args,
        *extra,
        "--wandb=false",
        f"--trainer.logger.init_args.save_dir={out_root}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    run_dir = out_root / name / "version_0"
    (out_root / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"row {name} failed (exit {proc.returncode}); see {out_root / (name + '.log')}:\n{proc.stderr[-2000:]}"
        )
    metrics = json.loads((run_dir / "results_test.json").read_text())["metrics"]
    train_logps = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key in ("train/logps/chosen", "train/logps/rejected", "ppo/reward_mean"):
                if row.get(key):
                    train_logps[key] = float(row[key])
            for key in ("mining/pairs",):
                if row.get(key):
                    train_logps[key] = float(row[key])
    return {"name": name, "wall_s": wall, **metrics, **train_logps}


def table(results: list[dict], reference: dict, header: str) -> str:
    lines = [
        header,
        "",
        "| run | noisy acc | clean acc | KL(π‖ref) noisy | changed vs ref (noisy) | logπ(chosen) at end | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| reference (SFT on clean, 2 epochs) | {reference['noisy']:.4f} | {reference['clean']:.4f} | 0 | 0 | — | — |",
    ]
    for r in results:
        desc = ROWS[r["name"]][0]
        logp = r.get("train/logps/chosen")
        lines.append(
            f"| {desc} | {r['test/acc_noisy']:.4f} | {r['test/acc_clean']:.4f} | {r.get('test/kl_ref_noisy', float('nan')):.3f} | "
            f"{r.get('test/changed_vs_ref_noisy', float('nan')):.3f} | {'—' if logp is None else f'{logp:.3f}'} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], reference: dict, path: Path) -> None:
    """Sorted horizontal bars of noisy and clean test accuracy, one row per run, with the reference and the
    supervised baseline as vertical lines: every label is readable however close the runs are."""
    from matplotlib.figure import Figure

    rows = sorted(results, key=lambda r: r["test/acc_noisy"])
    fig = Figure(figsize=(9, 0.42 * len(rows) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    names = [r["name"] for r in rows]
    baseline = next((r for r in results if r["name"] == "sft_both"), None)
    for ax, view in zip(axes, ("noisy", "clean")):
        values = [r[f"test/acc_{view}"] for r in rows]
        low = 0.8 if view == "noisy" else 0.9  # the runs that matter crowd near the top: zoom there
        ax.barh(range(len(rows)), values, color=["tab:orange" if n.startswith("sft") else "tab:blue" for n in names])
        for i, v in enumerate(values):  # off-scale runs keep their number, written at the left edge
            ax.text(max(v, low), i, f" {v:.3f}" + ("  (off scale)" if v < low else ""), va="center", fontsize=7)
        ax.axvline(reference[view], color="black", lw=1, ls=":", label=f"reference {reference[view]:.3f}")
        if baseline is not None:
            ax.axvline(
                baseline[f"test/acc_{view}"],
                color="tab:orange",
                lw=1,
                ls="--",
                label=f"SFT noisy+clean {baseline[f'test/acc_{view}']:.3f}",
            )
        ax.set_xlim(low, 1.0)
        ax.set_title(f"{view} test accuracy (axis from {low})", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_yticks(range(len(rows)), names, fontsize=8)
    fig.suptitle("Objectives from the same reference, same pairs, same budget (sorted by noisy accuracy)", fontsize=10)
    fig.subplots_adjust(
        left=0.16, right=0.98, wspace=0.08, top=1 - 0.9 / fig.get_figheight(), bottom=0.5 / fig.get_figheight()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def reference_sha256(a: argparse.Namespace) -> str:
    """The sha256 of the reference weights every row started from (rows are comparable only if it matches)."""
    from prefalign.digests import file_sha256

    path = a.out / "reference.pt" if a.quick else REPO / "artifacts" / "reference" / "seed_cnn.pt"
    return file_sha256(path)


def merge_saved(path: Path, results: list[dict], ref_sha: str, run: dict) -> tuple[list[dict], list[dict]]:
    """This run's rows plus the saved rows it did not redo; refuses rows measured from other reference weights."""
    saved = json.loads(path.read_text())
    if saved.get("reference_sha256") != ref_sha:
        raise SystemExit(
            f"{path} was measured from other reference weights ({saved.get('reference_sha256', 'unknown')[:12]} vs {ref_sha[:12]}): "
            "rerun every row instead of --merge."
        )
    mine = {r["name"] for r in results}
    kept = [r for r in saved["rows"] if r["name"] not in mine and r["name"] in ROWS]
    runs = [{**old, "rows": [n for n in old["rows"] if n not in mine]} for old in saved.get("runs", [])]
    return results + kept, [r for r in runs if r["rows"]] + [run]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument(
        "--precision",
        default="bf16-mixed",
        help="trainer precision for every row (bf16-mixed: the fast path on a CPU with bf16 kernels; where there are none, "
        "prefalign runs it as 32-true and the table says so)",
    )
    p.add_argument("--jobs", type=int, default=2, help="rows run at once; each gets cores/jobs threads")
    p.add_argument("--quick", action="store_true", help="synthetic data, 1 epoch: checks the script, not the science")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "compare")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/families/classifier.md")
    p.add_argument(
        "--replot",
        action="store_true",
        help="no runs: redraw the figure and rewrite the table (and the page's block) from <docs>/results.json",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of <docs>/results.json that this run does not redo (only if they used the same reference weights)",
    )
    a = p.parse_args(argv)
    if a.replot:
        saved = json.loads((a.docs / "results.json").read_text())
        plot(saved["rows"], saved["reference"], a.docs / "figures" / "objectives.png")
        if "header" in saved:
            write_table(a, table(saved["rows"], saved["reference"], saved["header"]))
        return 0
    threads = max(1, (os.cpu_count() or 1) // a.jobs)
    from prefalign.precision import resolve_precision

    ran_precision = resolve_precision(a.precision, "auto", fallback=True)[
        0
    ]  # what prefalign's CLI will run (accelerator auto)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    extra = [f"--trainer.precision={a.precision}", "--model.log_figures=false"] + (QUICK if a.quick else [])
    if a.quick:  # a small reference of its own, never the real one in artifacts/
        extra.append(f"--model.reference_ckpt={a.out / 'reference.pt'}")
    a.out.mkdir(parents=True, exist_ok=True)
    # Train (or reuse) the reference and mine the shared pairs once, before the parallel rows start, so no
    # two rows race to build them (max_epochs=0: setup only).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "prefalign",
            "fit",
            *PAIRS,
            *extra,
            "--trainer.max_epochs=0",
            "--test_after_fit=false",
            "--wandb=false",
            f"--trainer.logger.init_args.save_dir={a.out / 'warmup'}",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    start = time.time()
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(lambda n: run_row(n, ROWS[n][1], a.out, extra, env), a.rows))
    anyref = next(r for r in results if "test/reference/acc_noisy" in r)
    reference = {"noisy": anyref["test/reference/acc_noisy"], "clean": anyref["test/reference/acc_clean"]}
    ref_sha = reference_sha256(a)
    run = {
        "date": time.strftime("%Y-%m-%d"),
        "rows": [r["name"] for r in results],
        "total_s": round(time.time() - start),
    }
    runs = [run]
    if a.merge:
        results, runs = merge_saved(a.docs / "results.json", results, ref_sha, run)
    results.sort(key=lambda r: list(ROWS).index(r["name"]) if r["name"] in ROWS else len(ROWS))
    header = (
        f"Measured by `python scripts/compare_objectives.py{' --quick' if a.quick else ''}` "
        + "; ".join(
            f"on {r['date']} ({len(r['rows'])} rows, {r['total_s']} s{', with --merge' if i else ''})"
            for i, r in enumerate(runs)
        )
        + f" ({reporting.describe_machine()}, precision {ran_precision}, {a.jobs} runs at a time with "
        f"{threads} thread(s) each). Same reference (sha256 {ref_sha[:12]}), same seed, 5 epochs; preference rows share "
        "configs/dpo.yaml's pairs, optimiser and schedule. Wall time includes data setup and the final test."
    )
    a.docs.mkdir(parents=True, exist_ok=True)
    (a.docs / "results.json").write_text(
        json.dumps(
            {"reference": reference, "reference_sha256": ref_sha, "header": header, "runs": runs, "rows": results},
            indent=2,
        )
    )
    plot(results, reference, a.docs / "figures" / "objectives.png")
    write_table(a, table(results, reference, header))
    return 0


def write_table(a: argparse.Namespace, text: str) -> None:
    (a.docs / "results.md").write_text(text + "\n")
    if not a.no_docs:
        reporting.write_block("results", text, REPO)
        reporting.update_family_table(REPO)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
