"""The offline Hugging Face recipe's numbers (docs/huggingface.md, block ``hfrecipe``), from its runs' logged metrics.

    python scripts/hf_recipe_results.py --run   # from a clean state: delete the recipe's artifacts, run the whole
                                                #   recipe as one timed process (/usr/bin/time -v), then write the block
    python scripts/hf_recipe_results.py         # only rebuild the block from the latest runs and the saved time log

Every number comes from the runs: the pretraining run's last validation (``runs/hf_shakespeare_pretrain``,
metrics.csv) and the alignment run's test stage (``runs/hf_shakespeare_dpo``, results_test.json: the validation
split's windows and held-out prompts, the policy beside its reference), the mining statistics it logged, and the wall
time and peak memory of the whole process from ``/usr/bin/time -v`` (``runs/hf_recipe_time.txt``). Writes
docs/hf_recipe_results.json, the block, and the README's family table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO
COMMAND = ["python", "-m", "prefalign", "fit", "--config", "configs/hf_shakespeare_dpo.yaml"]
# What the recipe writes (its configs' paths): removed by --run so that everything is made again.
ARTIFACTS = (
    "artifacts/tokenizers/shakespeare_bpe_2048",
    "artifacts/reference/hf_shakespeare_llama",
    "artifacts/hf_pairs",
)
TIME_LOG = "runs/hf_recipe_time.txt"
LIMIT_MINUTES = 20


def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every metric in a CSV logger's metrics.csv."""
    out: dict[str, float] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


def parse_time_log(text: str) -> dict[str, float]:
    """Wall time (seconds), peak resident memory (MB) and CPU seconds from GNU time's ``-v`` report."""
    out: dict[str, float] = {}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if wall:
        seconds = 0.0
        for part in wall.group(1).split(":"):
            seconds = seconds * 60 + float(part)
        out["wall_seconds"] = seconds
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        out["peak_rss_mb"] = int(rss.group(1)) / 1024
    user, system = (re.search(rf"{k} time \(seconds\): ([\d.]+)", text) for k in ("User", "System"))
    if user and system:
        out["cpu_seconds"] = float(user.group(1)) + float(system.group(1))
    status = re.search(r"Exit status: (\d+)", text)
    if status:
        out["exit_status"] = int(status.group(1))
    return out


def collect(root: Path) -> dict:
    pretrain = reporting.latest_run("hf_shakespeare_pretrain", "metrics.csv", root)
    dpo = reporting.latest_run("hf_shakespeare_dpo", "results_test.json", root)
    if pretrain is None or dpo is None:
        raise SystemExit("hf_recipe_results: no finished runs of the recipe under runs/; run it with --run")
    base = last_values(pretrain / "metrics.csv")
    aligned = json.loads((dpo / "results_test.json").read_text())
    m = aligned["metrics"]
    logged = last_values(dpo / "metrics.csv")
    time_log = root / TIME_LOG
    timing = parse_time_log(time_log.read_text()) if time_log.is_file() else {}
    return {
        "command": " ".join(COMMAND),
        "pretrain_run": str(pretrain.relative_to(root)),
        "dpo_run": str(dpo.relative_to(root)),
        "objective": aligned["objective"],
        "pretrain": {
            "val_loss": base["val/loss"],
            "valid_words": base["val/valid_words"],
            "steps": int(base["step"]) + 1,
        },
        "reference": {"loss": m["test/reference/loss"], "valid_words": m["test/reference/valid_words"]},
        "policy": {"loss": m["test/loss"], "valid_words": m["test/valid_words"], "distinct_2": m["test/distinct_2"]},
        "real_valid_words": m["test/real/valid_words"],
        "loss_vs_reference": m["test/loss"] / m["test/reference/loss"] - 1,
        "mining": {k.split("/", 1)[1]: v for k, v in logged.items() if k.startswith("mining/")},
        "dpo_steps": aligned["global_step"],
        "timing": timing,
        "machine": reporting.machine_info(),
    }


def block(r: dict) -> str:
    t, machine = r["timing"], reporting.describe_machine(r["machine"])
    wall = f"{t['wall_seconds'] / 60:.1f} minutes" if "wall_seconds" in t else "not measured"
    lines = [
        f"Measured with `/usr/bin/time -v {r['command']}` from a clean state (no tokenizer, model or pairs; the corpus "
        f"already cached) on {machine} ({r['machine'].get('cpu_capability', '?')} kernels), fp32: **{wall}** wall time for the whole process "
        + (
            f"({t['cpu_seconds'] / 60:.1f} CPU-minutes, peak memory {t['peak_rss_mb']:.0f} MB)"
            if "cpu_seconds" in t
            else ""
        )
        + f", within the {LIMIT_MINUTES}-minute budget: {'yes' if t.get('wall_seconds', 1e9) <= LIMIT_MINUTES * 60 else 'NO'}.",
        "",
        "| model | validation loss (nats/token) | vs pretrained | valid-word rate of samples |",
        "|---|---:|---:|---:|",
        f"| pretrained ({r['pretrain']['steps']} steps, `{r['pretrain_run']}`) | {r['reference']['loss']:.4f} | — | {r['reference']['valid_words']:.3f} |",
        f"| aligned, {r['objective']} ({r['dpo_steps']} steps, `{r['dpo_run']}`) | {r['policy']['loss']:.4f} | {r['loss_vs_reference']:+.1%} | {r['policy']['valid_words']:.3f} |",
        f"| real continuations | — | — | {r['real_valid_words']:.3f} |",
        "",
        f"Mining: {r['mining'].get('pairs', 0):.0f} pairs from {r['mining'].get('pool_size', 0):.0f} prompts "
        f"(best of 2 samples, ties dropped; the samples' mean valid-word rate {r['mining'].get('reference_valid_words', float('nan')):.3f}). "
        f"Samples: 2 per held-out prompt, 16 tokens, temperature 1; word distinct-2 of the aligned model's samples {r['policy']['distinct_2']:.3f}.",
    ]
    return "\n".join(lines)


def run_recipe(root: Path) -> None:
    for rel in ARTIFACTS:
        shutil.rmtree(root / rel, ignore_errors=True)
    for name in ("hf_shakespeare_pretrain", "hf_shakespeare_dpo"):
        shutil.rmtree(root / "runs" / name, ignore_errors=True)
    log = root / TIME_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    command = ["/usr/bin/time", "-v", "-o", str(log), sys.executable, *COMMAND[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, cwd=root, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run", action="store_true", help="delete the recipe's artifacts and runs, run it timed, then write"
    )
    p.add_argument("--no-docs", action="store_true", help="only print and save the JSON")
    a = p.parse_args(argv)
    if a.run:
        run_recipe(REPO)
    results = collect(REPO)
    reporting.publish_recipe_results(
        results, "hf_recipe_results.json", "hfrecipe", block(results), write_docs=not a.no_docs
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
