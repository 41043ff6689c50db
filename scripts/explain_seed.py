"""Print (and put on the classifier page) what the DPO-on-noisy-MNIST notebook's recipe does to the model, from a run's logged metrics.

    python scripts/explain_seed.py runs/compare/seed_dpo/version_0

Reads ``metrics.csv`` (CSV logger) and ``results_test.json`` of a ``configs/seed_dpo.yaml`` run and writes the
trajectory of the TRL-style metrics between ``<!-- seed:begin -->`` / ``<!-- seed:end -->`` in docs/families/classifier.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO

TRAIN = (
    "train/logps/chosen",
    "train/logps/rejected",
    "train/rewards/margins",
    "train/rewards/accuracies",
    "train/kl_ref",
)
VAL = ("val/acc_noisy", "val/acc_clean", "val/entropy_clean", "val/kl_ref_clean")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--no-docs", action="store_true", help="only print the block")
    a = p.parse_args(argv)
    rows = list(csv.DictReader(open(a.run_dir / "metrics.csv")))
    train = [r for r in rows if r.get("train/logps/chosen")]
    val = [r for r in rows if r.get("val/acc_noisy")]
    mining = next((r for r in rows if r.get("mining/pairs")), {})
    test = json.loads((a.run_dir / "results_test.json").read_text())["metrics"]
    picks = [train[0], train[len(train) // 4], train[len(train) // 2], train[-1]] if len(train) >= 4 else train
    lines = [
        f"From `python scripts/explain_seed.py {a.run_dir}` (a `configs/seed_dpo.yaml` run; "
        f"{int(float(mining.get('mining/pairs', 0)))} pairs mined from {int(float(mining.get('mining/pool_size', 0)))} noisy training images, "
        f"reference accuracy on them {float(mining.get('mining/reference_accuracy_pairs', 0)):.2f}).",
        "",
        "| step | logπ(chosen) | logπ(rejected) | reward margin | reward accuracy | KL(π‖ref) on pairs |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in picks:
        lines.append(f"| {r['step']} | " + " | ".join(f"{float(r[k]):.3f}" for k in TRAIN) + " |")
    lines += [
        "",
        "| after epoch | val noisy acc | val clean acc | entropy (clean) | KL(π‖ref) clean |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in val:
        lines.append(f"| {int(r['epoch']) + 1} | " + " | ".join(f"{float(r[k]):.3f}" for k in VAL) + " |")
    lines += [
        "",
        f"Test: noisy {test['test/acc_noisy']:.4f} (reference {test['test/reference/acc_noisy']:.4f}), "
        f"clean {test['test/acc_clean']:.4f} (reference {test['test/reference/acc_clean']:.4f}); "
        f"{test['test/changed_vs_ref_clean']:.1%} of clean test predictions changed.",
    ]
    text = "\n".join(lines)
    if not a.no_docs:
        reporting.write_block("seed", text, REPO)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
