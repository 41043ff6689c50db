"""The language family's table and reward-vs-KL figure (docs/families/language.md), from the runs' own test results.

    bash scripts/lm_all.sh              # trains the reference and every row, then runs this
    python scripts/lm_results.py        # only rebuild the table from the latest run of each row under runs/
    python scripts/lm_results.py --replot   # no runs: redraw the figure and rewrite the table from docs/lm_results.json

Every number comes from a run's ``results_test.json``, the metrics its test stage logged (the language family's
evaluation, :class:`prefalign.families.language.evaluation.LanguageEvaluation`): loss (nats/char), entropy and exact
KL to the reference over the validation windows, and the valid-word rate of seeded samples from the data's validation
prompts, beside the run's reference's and the real continuations' rates. The reference row is the pretraining run's
(``configs/lm_pretrain.yaml``). "Gap closed" = (policy − reference) / (real − reference) of the valid-word rate, with
each run's own reference. The pretraining block adds unigram and bigram baselines counted on the training split and
scored on the same validation windows. Writes docs/lm_results.{md,json}, docs/figures/lm_frontier.png and the blocks
<!-- lmpretrain:begin/end --> and <!-- lm:begin/end --> of docs/families/language.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO
sys.path.insert(0, str(REPO))  # prefalign, when run as python scripts/lm_results.py without an installed package

RUNS = {
    "seed_pg": "lm_seed_pg",
    "seed_pg_lr1e-3": "lm_seed_pg_lr1e-3",
    "ppo": "lm_ppo",
    "dpo_plain": "lm_dpo_plain",
    "dpo": "lm_dpo",
    "spin_plain": "lm_spin_plain",
    "spin": "lm_spin",
}
LABELS = {
    "reference": "reference (configs/lm_pretrain.yaml)",
    "seed_pg": "the tiny-transformer notebook's loop (configs/lm_seed_pg.yaml)",
    "seed_pg_lr1e-3": "the notebook's loop at lr 1e-3 (100× the notebook's)",
    "ppo": "PPO-lite, lexical validity (configs/lm_ppo.yaml)",
    "dpo_plain": "plain DPO β=0.1, lr 1e-4, best-of-2 pairs (no NLL anchor)",
    "dpo": "RPO, best-of-2 pairs (configs/lm_dpo.yaml)",
    "spin_plain": "plain DPO β=0.1, lr 1e-4, SPIN pairs",
    "spin": "RPO, SPIN pairs (lm_dpo.yaml, pair_strategy=spin)",
}
missing = set(RUNS) - set(LABELS)
assert not missing, f"no label for {missing}"


def test_results(run: Path) -> dict:
    return json.loads((run / "results_test.json").read_text())


def row_from_run(name: str, run: Path) -> dict:
    """One table row from a run's logged test metrics. The reference row (the pretraining run) is its own reference."""
    m = test_results(run)["metrics"]
    own = name == "reference"
    ref_loss = m["test/loss"] if own else m["test/reference/loss"]
    ref_words = m["test/valid_words"] if own else m["test/reference/valid_words"]
    real = m["test/real/valid_words"]
    gap = real - ref_words
    return {
        "name": name,
        "run": str(run.relative_to(REPO)) if run.is_relative_to(REPO) else str(run),
        "val_loss": m["test/loss"],
        "kl_ref": 0.0 if own else m["test/kl_ref"],
        "entropy": m["test/entropy"],
        "valid_words": m["test/valid_words"],
        "real_valid_words": real,
        "reference_loss": ref_loss,
        "reference_valid_words": ref_words,
        "val_loss_vs_reference": m["test/loss"] / ref_loss - 1,
        "gap_closed": (m["test/valid_words"] - ref_words) / gap if gap > 0 else float("nan"),
    }


def data_settings(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]


def ngram_baselines(train: torch.Tensor, val: torch.Tensor, n_vocab: int) -> dict[str, float]:
    """Cross-entropy (nats/char) of predicting ``val[1:]`` (every character after the first, as the model's test
    windows do) with unigram and bigram models counted on the training ids, add-one smoothed."""
    uni = torch.bincount(train, minlength=n_vocab).double() + 1
    uni_logp = (uni / uni.sum()).log()
    big = torch.zeros(n_vocab, n_vocab, dtype=torch.float64)
    big.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), accumulate=True)
    big_logp = ((big + 1) / (big + 1).sum(1, keepdim=True)).log()
    return {"unigram": float(-uni_logp[val[1:]].mean()), "bigram": float(-big_logp[val[:-1], val[1:]].mean())}


def baselines_on_test_windows(run: Path) -> tuple[dict[str, float], int]:
    """The n-gram baselines on the characters the pretraining run's test stage predicted (its data settings), and
    how many characters that is."""
    from prefalign.data.text import CharTextDataModule

    data = CharTextDataModule(**data_settings(run))
    data.setup("fit")
    windows = data.eval_windows()["tokens"]  # consecutive windows of block + 1 ids, each starting where the last ended
    predicted = len(windows) * (windows.shape[1] - 1)
    return ngram_baselines(data.ids["train"], data.ids["val"][: predicted + 1], len(data.tokenizer)), predicted


def pretrain_block(reference_row: dict, baselines: dict, characters: int, run: Path) -> str:
    lines = [
        f"Pretraining (`configs/lm_pretrain.yaml`): test loss **{reference_row['val_loss']:.4f}** nats/char "
        f"({reference_row['val_loss'] / 0.6931471805599453:.3f} bits/char) over {characters:,} characters of the validation split; "
        f"baselines on the same characters: unigram {baselines['unigram']:.4f}, bigram {baselines['bigram']:.4f} (add-one smoothed counts of the training split)."
    ]
    results = test_results(run)
    settings = data_settings(run)
    tokens = results["global_step"] * settings["batch_size"] * settings["block_size"]
    seconds = results.get("fit_seconds")
    if seconds:
        lines.append(
            f"Training took {seconds / 60:.1f} minutes of `fit` ({results['global_step']} steps, {tokens / 1e6:.1f}M training "
            f"characters, {tokens / seconds / 1e3:.0f}k characters/s including validation) in `{run.relative_to(REPO)}`."
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Valid-word rate against KL on a log axis (the runs differ by orders of magnitude in KL), zoomed on the runs
    that still speak English; a collapsed run is named in the corner instead of squashing the others."""
    from matplotlib.figure import Figure

    floor = 1e-4  # the reference's KL is 0: drawn at the left edge
    real = rows[0]["real_valid_words"]
    low = min(0.75, min(r["valid_words"] for r in rows if r["valid_words"] > 0.5) - 0.02)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    off = []
    for r in rows:
        if r["valid_words"] < low:
            off.append(f"{r['name']}: KL {r['kl_ref']:.2f}, valid words {r['valid_words']:.3f}")
            continue
        x = max(r["kl_ref"], floor)
        ax.scatter(x, r["valid_words"], s=40)
        ax.annotate(r["name"], (x, r["valid_words"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(real, color="tab:green", ls="--", lw=1, label=f"real text {real:.3f}")
    ax.set_xscale("log")
    ax.set_ylim(low, max(real, max(r["valid_words"] for r in rows)) + 0.02)
    ax.set_xlabel("KL(policy‖reference), nats per character (validation text; log scale, reference at 1e-4)")
    ax.set_ylabel("valid-word rate of samples")
    ax.set_title("Reward against KL to the reference", fontsize=10)
    if off:
        ax.text(0.02, 0.03, "off scale (collapsed): " + "; ".join(off), transform=ax.transAxes, fontsize=7)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| run | loss (nats/char) | vs reference | entropy | KL to reference | valid-word rate | gap closed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS[r['name']]} | {r['val_loss']:.4f} | {r['val_loss_vs_reference']:+.1%} | {r['entropy']:.4f} | {r['kl_ref']:.4f} | {r['valid_words']:.3f} | "
            + ("—" if r["name"] == "reference" else f"{r['gap_closed']:.0%}")
            + " |"
        )
    return "\n".join(lines) + f"\n\n![reward against KL]({reporting.link('docs/figures/lm_frontier.png', 'lm', REPO)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/families/language.md")
    p.add_argument(
        "--replot",
        action="store_true",
        help="no runs: redraw the figure and rewrite the table from <docs>/lm_results.json",
    )
    a = p.parse_args(argv)
    if a.replot:
        saved = json.loads((a.docs / "lm_results.json").read_text())
        plot(saved["rows"], a.docs / "figures" / "lm_frontier.png")
        if not a.no_docs:
            reporting.write_block("lm", table(saved["rows"], saved["header"]), REPO)
            reporting.update_family_table(REPO)
        return 0
    pretrain = reporting.latest_run("lm_pretrain", "results_test.json", REPO)
    if pretrain is None:
        raise SystemExit("lm_results: no finished run of configs/lm_pretrain.yaml under runs/; run scripts/lm_all.sh")
    rows = [row_from_run("reference", pretrain)]
    for name, folder in RUNS.items():
        run = reporting.latest_run(folder, "results_test.json", REPO)
        if run is None:
            print(f"lm_results: no finished run under runs/{folder} — row {name} skipped")
            continue
        rows.append(row_from_run(name, run))
    prompts = sorted({data_settings(REPO / r["run"]).get("eval_prompts", 64) for r in rows})
    header = (
        f"Read by `python scripts/lm_results.py` on {time.strftime('%Y-%m-%d')} from each run's logged test metrics "
        f"({reporting.describe_machine()}): loss, entropy and exact KL over the same validation windows; valid-word rate of 2 seeded "
        f"samples (temperature 1) from each of {' or '.join(map(str, prompts))} validation prompts, the same for every model; real "
        f"continuations score {rows[0]['real_valid_words']:.3f}. *vs reference* and *gap closed* compare each run with its own reference."
    )
    text = table(rows, header)
    baselines, characters = baselines_on_test_windows(pretrain)
    pre = pretrain_block(rows[0], baselines, characters, pretrain)
    a.docs.mkdir(parents=True, exist_ok=True)
    (a.docs / "lm_results.json").write_text(
        json.dumps({"header": header, "rows": rows, "baselines": baselines}, indent=2)
    )
    (a.docs / "lm_results.md").write_text(pre + "\n\n" + text + "\n")
    plot(rows, a.docs / "figures" / "lm_frontier.png")
    if not a.no_docs:
        reporting.write_block("lm", text, REPO)
        reporting.write_block("lmpretrain", pre, REPO)
        reporting.update_family_table(REPO)
    print(pre + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
