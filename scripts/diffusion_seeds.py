"""The Diffusion-DPO recipe on several seeds of its whole pipeline (issue #26): the seeds table of docs/families/diffusion.md.

    python scripts/diffusion_seeds.py                  # seeds 0 1 2: reference, alignment, held-out test; then the table
    python scripts/diffusion_seeds.py --from-runs      # only rebuild the table from the runs under runs/
    python scripts/diffusion_seeds.py --name diffusion_dpo_1200 --extra --trainer.max_steps=1200   # a variant recipe

Per seed S, each step a subprocess (`python -m prefalign ...`, timed):

1. the reference: `fit --config configs/diffusion_pretrain.yaml --seed_everything=S`, exported to
   artifacts/reference/denoiser_seedS.pt, run folder runs/diffusion_pretrain_seedS;
2. the alignment: `fit --config <--config> --seed_everything=S --model.reference_ckpt=<that file>`, pairs cached
   under artifacts/pairs/seedS, run folder runs/<--name>_seedS. Its test stage samples from the family's eval_seed
   (1234), the noise the recipe was tuned on (its validation draws from the same seeded stream): the *validation noise*;
3. held-out noise: `test` of that run's final checkpoint with `--model.family.init_args.eval_seed=<--heldout-seed>`,
   run folder runs/<--name>_seedS_heldout; policy and reference are both sampled from the new noise.

The bar (scripts/diffusion_results.py) is checked on both noises, with the issue's margin: error ≤ 0.45 × the
reference's. Time = reference fit + alignment fit (+ the pair mining when the alignment read cached pairs), as in
the one-seed table. `--extra` arguments go to the alignment and the held-out test, `{seed}` in them becomes the seed.
Writes docs/diffusion_seeds.{md,json} and the block between <!-- diffusion-seeds:begin --> / <!-- diffusion-seeds:end -->.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_results  # noqa: E402
import reporting  # noqa: E402

REPO = reporting.REPO
PRETRAIN = "configs/diffusion_pretrain.yaml"
MARGIN = 0.45
KEYS = ("error_rate", "p_class", "fid", "diversity", "eps_mse")
NOISES = {"validation": "", "held-out": "_heldout"}  # noise → run-folder suffix
#: criterion → (column, the per-seed number it reads)
CRITERIA = {
    "error ≤ ½ ref": ("error ÷ ref", lambda r: r["error_rate"] / r["reference"]["error_rate"]),
    "error ≤ 0.45 ref": ("error ÷ ref", None),  # the margin: same number, stricter threshold
    "FID ≤ 1.1 ref": ("FID ÷ ref", lambda r: r["fid"] / r["reference"]["fid"]),
    "diversity ≥ 0.9 ref": ("diversity ÷ ref", lambda r: r["diversity"] / r["reference"]["diversity"]),
    "win ≥ 60%": ("win rate", lambda r: r["win_rate"]),
    "≤ 30 min": ("reference + alignment, min", lambda r: r["total_minutes"]),
}


def reference_path(seed: int) -> str:
    return f"artifacts/reference/denoiser_seed{seed}.pt"


def run_names(seed: int, name: str) -> dict[str, str]:
    """runs/<folder> of each step of seed ``seed``."""
    return {
        "reference": f"diffusion_pretrain_seed{seed}",
        "alignment": f"{name}_seed{seed}",
        "heldout": f"{name}_seed{seed}_heldout",
    }


def commands(seed: int, a: argparse.Namespace, checkpoint: str = "<run>/checkpoints/last.ckpt") -> dict[str, list[str]]:
    """The three command lines of seed ``seed`` (the held-out test needs the alignment run's final checkpoint)."""
    runs, py, logger = run_names(seed, a.name), [sys.executable, "-m", "prefalign"], "--trainer.logger.init_args.name="
    seeded = lambda args: [arg.replace("{seed}", str(seed)) for arg in args]  # noqa: E731
    common = [f"--seed_everything={seed}", "--wandb=false"]
    align = ["--config", a.config, *common, f"--model.reference_ckpt={reference_path(seed)}"]
    pretrain = ["--config", PRETRAIN, *common, f"--model.export_path={reference_path(seed)}"]
    heldout = [f"--model.family.init_args.eval_seed={a.heldout_seed}", logger + runs["heldout"]]
    return {
        "reference": [*py, "fit", *pretrain, logger + runs["reference"], *seeded(a.pretrain_extra)],
        "alignment": [
            *py,
            "fit",
            *align,
            f"--data.init_args.cache_dir=artifacts/pairs/seed{seed}",
            logger + runs["alignment"],
            *seeded(a.extra),
        ],
        "heldout": [*py, "test", *align, *heldout, *seeded(a.extra), f"--ckpt_path={checkpoint}"],
    }


def run_seed(seed: int, a: argparse.Namespace) -> None:
    """Train and test one seed; each run folder gets a wall.json with the subprocess's wall time and command. With
    ``--reuse`` a step whose finished run (and, for the reference, weights file) exists is skipped, until one runs."""
    runs, fresh = run_names(seed, a.name), not a.reuse
    for step in ("reference", "alignment", "heldout"):
        done = reporting.latest_run(runs[step], "results_test.json", REPO)
        if not fresh and done and (step != "reference" or (REPO / reference_path(seed)).is_file()):
            print(f"diffusion_seeds: seed {seed}: reusing {done.relative_to(REPO)}", flush=True)
            continue
        fresh = True  # a step that runs again makes the later ones stale
        checkpoint = reporting.latest_run(runs["alignment"], "results_test.json", REPO)
        cmd = commands(seed, a, str((checkpoint or Path("?")) / "checkpoints" / "last.ckpt"))[step]
        print(f"diffusion_seeds: seed {seed}, {step}: {' '.join(cmd[1:])}", flush=True)
        start = time.monotonic()
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            raise SystemExit(
                f"diffusion_seeds: seed {seed}, {step} failed; finished runs are kept (--reuse skips them)"
            )
        run = reporting.latest_run(runs[step], "results_test.json", REPO)
        wall = {"wall_seconds": round(time.monotonic() - start, 1), "command": cmd[1:]}
        (run / "wall.json").write_text(json.dumps(wall, indent=2))


def last_validation(run: Path) -> dict[str, float]:
    """The in-training validation (val_per_class samples per class): the last row, and the reference's (logged once)."""
    out: dict[str, float] = {}
    with open(run / "metrics.csv", newline="") as f:
        for record in csv.DictReader(f):
            if record.get("val/reference/error_rate"):
                out["reference_error_rate"] = float(record["val/reference/error_rate"])
            if record.get("val/error_rate"):
                out.update(step=float(record["step"]), error_rate=float(record["val/error_rate"]))
                out.update({k: float(record[f"val/{k}"]) for k in ("win_rate", "diversity") if record.get(f"val/{k}")})
    return out


def seed_rows(seed: int, name: str) -> list[dict]:
    """The seed's rows (one per noise that has a finished run), each with every criterion checked."""
    runs = run_names(seed, name)
    pre, align = (reporting.latest_run(runs[k], "results_test.json", REPO) for k in ("reference", "alignment"))
    if pre is None or align is None:
        print(
            f"diffusion_seeds: seed {seed}: no finished runs/{runs['reference' if pre is None else 'alignment']}, skipped"
        )
        return []
    pre_fit, align_fit = (json.loads((r / "results_test.json").read_text())["fit_seconds"] for r in (pre, align))
    mining = diffusion_results.mining_record(align)
    minutes = (pre_fit + align_fit + (mining["mining/seconds"] if mining["mining/from_cache"] else 0.0)) / 60
    walls = [
        json.loads((r / "wall.json").read_text())["wall_seconds"] for r in (pre, align) if (r / "wall.json").is_file()
    ]
    rows = []
    for noise, suffix in NOISES.items():
        run = reporting.latest_run(runs["alignment"] + suffix, "results_test.json", REPO)
        if run is None:
            print(f"diffusion_seeds: seed {seed}: no finished runs/{runs['alignment']}{suffix} ({noise} noise)")
            continue
        m = json.loads((run / "results_test.json").read_text())["metrics"]
        row = {
            "seed": seed,
            "noise": noise,
            "run": run.relative_to(REPO).as_posix(),
            **{k: m[f"test/{k}"] for k in KEYS},
            "win_rate": m["test/win_rate"],
            "reference": {k: m[f"test/reference/{k}"] for k in KEYS},
            "total_minutes": minutes,
            "mining_minutes": mining["mining/seconds"] / 60,
            "wall_minutes": sum(walls) / 60 if len(walls) == 2 else None,
            "precision": sorted({diffusion_results.run_precision(r) for r in (pre, align, run)}),
        }
        row["bar"] = diffusion_results.bar(row, row["reference"], minutes)
        row["bar"]["error ≤ 0.45 ref"] = row["error_rate"] <= MARGIN * row["reference"]["error_rate"]
        row["values"] = {c: f(row) for c, (_, f) in CRITERIA.items() if f is not None}
        if noise == "validation":
            row["last_validation"] = last_validation(align)
        rows.append(row)
    return rows


def spread(values: list[float], f: str = ".3f") -> str:
    """mean ± sample standard deviation [min–max]; one value alone (no spread to speak of)."""
    if len(values) == 1:
        return f"{values[0]:{f}} (one seed)"
    sd = statistics.stdev(values)
    return f"{statistics.fmean(values):{f}} ± {sd:{f}} [{min(values):{f}}–{max(values):{f}}]"


def table(rows: list[dict], seeds: list[int]) -> tuple[str, dict]:
    columns = [c for c in CRITERIA if CRITERIA[c][1] is not None]
    lines = [
        "| seed | noise | error rate: policy / reference | error ÷ ref | FID ÷ ref | diversity ÷ ref | win rate "
        "| reference + alignment | missed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        marks = {c: "✓" if ok else "✗" for c, ok in r["bar"].items()}
        error_mark = marks["error ≤ ½ ref"] + marks["error ≤ 0.45 ref"]
        cells = [f"{r['values'][c]:.3f} {error_mark if c.startswith('error') else marks[c]}" for c in columns]
        wall = f" (wall {r['wall_minutes']:.1f})" if r["wall_minutes"] is not None else ""
        cells[-1] = f"{r['total_minutes']:.1f} min{wall} {marks['≤ 30 min']}"
        missed = ", ".join(c for c, ok in r["bar"].items() if not ok) or "—"
        lines.append(
            f"| {r['seed']} | {r['noise']} | {r['error_rate']:.3f} / {r['reference']['error_rate']:.3f} | "
            + " | ".join(cells)
            + f" | {missed} |"
        )
    summary = {}
    lines += [
        "",
        f"Over the seeds, mean ± sample standard deviation [min–max] ({len(seeds)} seeds asked for):",
        "",
        "| noise | n | " + " | ".join(CRITERIA[c][0] for c in columns) + " | criteria met on |",
        "|---|---:|" + "---:|" * len(columns) + "---|",
    ]
    for noise in NOISES:
        mine = [r for r in rows if r["noise"] == noise]
        if not mine:
            continue
        summary[noise] = {c: [r["values"][c] for r in mine] for c in columns}
        met = ", ".join(f"{c} {sum(r['bar'][c] for r in mine)}/{len(mine)}" for c in CRITERIA)
        lines.append(
            f"| {noise} | {len(mine)} | "
            + " | ".join(spread(v, ".1f" if c == "≤ 30 min" else ".3f") for c, v in summary[noise].items())
            + f" | {met} |"
        )
    passed = [
        s
        for s in seeds
        if all(any(r["seed"] == s and r["noise"] == n for r in rows) for n in NOISES)
        and all(all(r["bar"].values()) for r in rows if r["seed"] == s)
    ]
    bar_only = {
        n: sum(all(v for c, v in r["bar"].items() if c != "error ≤ 0.45 ref") for r in rows if r["noise"] == n)
        for n in NOISES
    }
    verdict = (
        f"**Verdict: met on {len(passed)} of {len(seeds)} seeds** (every criterion of the bar with the margin, "
        f"error ≤ {MARGIN} × the reference's, on the validation and the held-out noise; a seed without both "
        f"runs counts as missed). The bar without the margin: "
        + ", ".join(f"{bar_only[n]} of {len(seeds)} on the {n} noise" for n in NOISES)
        + "."
    )
    lines += ["", verdict]
    return "\n".join(lines), {"summary": summary, "passed_seeds": passed, "bar_only": bar_only, "verdict": verdict}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", default="configs/diffusion_dpo.yaml", help="the alignment recipe")
    p.add_argument("--name", default="diffusion_dpo", help="run folders runs/<name>_seed<S>[_heldout]")
    p.add_argument("--heldout-seed", type=int, default=4321, help="eval_seed of the held-out noise")
    p.add_argument("--from-runs", action="store_true", help="train nothing: the table from the runs under runs/")
    p.add_argument("--reuse", action="store_true", help="skip a step whose finished run exists")
    p.add_argument("--docs", type=Path, default=None, help="where diffusion_seeds.{md,json} go (default docs/)")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/families/diffusion.md")
    p.add_argument(
        "--pretrain-extra",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument of the reference fit, e.g. --pretrain-extra=--trainer.max_epochs=5 (repeatable)",
    )
    p.add_argument(
        "--extra",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="ARG",
        help="last: more arguments of the alignment fit and the held-out test ({seed}: the seed)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    docs = a.docs or REPO / "docs"
    if not a.from_runs:
        for seed in a.seeds:
            run_seed(seed, a)
    rows = [row for seed in a.seeds for row in seed_rows(seed, a.name)]
    if not rows:
        raise SystemExit(f"diffusion_seeds: no finished runs/{a.name}_seed<S> for seeds {a.seeds}")
    text, summary = table(rows, a.seeds)
    command = "python scripts/diffusion_seeds.py " + " ".join(
        [f"--seeds {' '.join(map(str, a.seeds))}", f"--config {a.config}", f"--name {a.name}"]
        + [f"--pretrain-extra={arg}" for arg in a.pretrain_extra]
        + ([f"--extra {' '.join(a.extra)}"] if a.extra else [])
    )
    precisions = ", ".join(sorted({p for r in rows for p in r["precision"]}))
    header = (
        f"Measured by `{command}` on {time.strftime('%Y-%m-%d')} ({reporting.describe_machine()}, {precisions}): "
        f"for each seed S, `--seed_everything=S` for the reference fit (`{PRETRAIN}`) and the alignment fit "
        f"(`{a.config}`), then the aligned policy and its reference scored by the evaluation judge on 100 samples "
        f"per class from the *validation* noise (eval_seed 1234, on which the recipe was tuned) and from *held-out* "
        f"noise (eval_seed {a.heldout_seed}). ✓ met, ✗ missed; the error column checks ½ and then the margin, 0.45. "
        "Time: both fits, plus the pair mining when the alignment read cached pairs."
    )
    text = header + "\n\n" + text
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "diffusion_seeds.json").write_text(
        json.dumps({"header": header, "command": command, "seeds": a.seeds, "rows": rows, **summary}, indent=2)
    )
    (docs / "diffusion_seeds.md").write_text(text + "\n")
    if not a.no_docs:
        reporting.write_block("diffusion-seeds", text, REPO)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
