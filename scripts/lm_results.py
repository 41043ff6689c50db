"""Judge the language-model runs on the same footing and write the README's LM table and reward-vs-KL figure.

    python scripts/lm_results.py                      # the latest run of each LM config under runs/
    python scripts/lm_results.py --prompts 64 --samples 2   # a quicker look

For the reference and each run's final policy (``runs/<config>/version_<n>/policy.pt``): validation loss (nats/char
over the whole validation split), mean per-character exact KL to the reference on the same text, and the valid-word
rate of 4 seeded samples from each of 256 validation prompts (32 characters in, 32 out; identical prompts and
seeds for every model), beside the real continuations' rate. "Gap closed" = (policy − reference) / (real −
reference) of the valid-word rate. Writes docs/lm_results.{md,json}, docs/figures/lm_frontier.png and the block
between <!-- lm:begin --> / <!-- lm:end --> in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prefalign.models.loading import load_model  # noqa: E402
from prefalign.data.text import CharTextDataModule, CharTokenizer  # noqa: E402
from prefalign.data.text.lexicon import lexicon, valid_word_rates  # noqa: E402
from prefalign.families.language.sequences import exact_token_kl, token_log_probs  # noqa: E402
from prefalign.models.generation import sample  # noqa: E402

RUNS = {"seed_pg": "lm_seed_pg", "seed_pg_lr1e-3": "lm_seed_pg_lr1e-3", "ppo": "lm_ppo", "dpo_plain": "lm_dpo_plain", "dpo": "lm_dpo",
        "spin_plain": "lm_spin_plain", "spin": "lm_spin"}
LABELS = {"reference": "reference (configs/lm_pretrain.yaml)", "seed_pg": "seed 002's loop (configs/lm_seed_pg.yaml)",
          "seed_pg_lr1e-3": "seed 002's loop at lr 1e-3 (100× the seed's)", "ppo": "PPO-lite, lexical validity (configs/lm_ppo.yaml)",
          "dpo_plain": "plain DPO β=0.1, lr 1e-4, best-of-2 pairs (no NLL anchor)", "dpo": "RPO, best-of-2 pairs (configs/lm_dpo.yaml)",
          "spin_plain": "plain DPO β=0.1, lr 1e-4, SPIN pairs", "spin": "RPO, SPIN pairs (lm_dpo.yaml, pair_strategy=spin)"}
missing = set(RUNS) - set(LABELS)
assert not missing, f"no label for {missing}"


def latest(name: str) -> Path | None:
    runs = sorted((REPO / "runs" / name).glob("version_*/policy.pt"), key=lambda p: int(p.parent.name.split("_")[1]))
    return runs[-1] if runs else None


@torch.no_grad()
def judge(model, reference, data: CharTextDataModule, tok: CharTokenizer, words, prompts, samples: int) -> dict:
    n = len(tok)
    windows = data.eval_windows()["tokens"]
    nll = kl = entropy = count = 0.0
    for part in windows.split(256):
        logps, dist = token_log_probs(model, part[:, :1], part[:, 1:], n)
        nll -= float(logps.sum())
        entropy -= float((dist.exp() * dist).sum())
        count += logps.numel()
        if reference is not model:
            kl += float(exact_token_kl(dist, token_log_probs(reference, part[:, :1], part[:, 1:], n)[1]).sum())
    ids = sample(model, prompts.repeat_interleave(samples, dim=0), 32, n, model.block_size, generator=torch.Generator().manual_seed(0))
    rate = float(valid_word_rates([tok.decode(r) for r in ids], words).mean())
    return {"val_loss": nll / count, "kl_ref": kl / count, "entropy": entropy / count, "valid_words": rate}


def ngram_baselines(train: torch.Tensor, val: torch.Tensor, n_vocab: int) -> dict[str, float]:
    """Cross-entropy (nats/char) on the validation ids of unigram and bigram models counted on the training ids,
    add-one smoothed."""
    uni = torch.bincount(train, minlength=n_vocab).double() + 1
    uni_logp = (uni / uni.sum()).log()
    big = torch.zeros(n_vocab, n_vocab, dtype=torch.float64)
    big.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), accumulate=True)
    big_logp = ((big + 1) / (big + 1).sum(1, keepdim=True)).log()
    return {"unigram": float(-uni_logp[val].mean()), "bigram": float(-big_logp[val[:-1], val[1:]].mean())}


def pretrain_block(reference_row: dict, baselines: dict, run: Path | None) -> str:
    lines = [f"Pretraining (`configs/lm_pretrain.yaml`): validation loss **{reference_row['val_loss']:.4f}** nats/char "
             f"({reference_row['val_loss'] / 0.6931471805599453:.3f} bits/char) over the whole validation split; "
             f"baselines on the same split: unigram {baselines['unigram']:.4f}, bigram {baselines['bigram']:.4f} (add-one smoothed counts of the training split)."]
    if run is not None and (run / "results_test.json").is_file():
        results = json.loads((run / "results_test.json").read_text())
        config = (run / "config.yaml").read_text()
        import yaml

        cfg = yaml.safe_load(config)
        tokens = results["global_step"] * cfg["data"]["init_args"]["batch_size"] * cfg["data"]["init_args"]["block_size"]
        seconds = results.get("fit_seconds")
        if seconds:
            lines.append(f"Training took {seconds / 60:.1f} minutes of `fit` ({results['global_step']} steps, {tokens / 1e6:.1f}M training "
                         f"characters, {tokens / seconds / 1e3:.0f}k characters/s including validation) in `{run.relative_to(REPO)}`.")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, default=REPO / "artifacts/reference/lm_tiny.pt")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--replot", action="store_true", help="no evaluation: redraw the figure from <docs>/lm_results.json")
    a = p.parse_args(argv)
    if a.replot:
        plot(json.loads((a.docs / "lm_results.json").read_text())["rows"], a.docs / "figures" / "lm_frontier.png")
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    reference = load_model(a.reference).eval()
    tok = CharTokenizer.from_codes(reference.vocab)
    data = CharTextDataModule(source="shakespeare", eval_prompts=a.prompts, eval_new_tokens=32, prompt_length=32)
    data.setup("fit")
    data.use_tokenizer(tok)
    words = lexicon(data.text["train"])
    prompts, real = data.evaluation_prompts()
    real_rate = float(valid_word_rates([tok.decode(r) for r in real], words).mean())
    models = {"reference": a.reference, **{k: latest(v) for k, v in RUNS.items()}}
    rows = []
    for name, path in models.items():
        if path is None:
            print(f"lm_results: no run of {RUNS.get(name)} under runs/ — skipped")
            continue
        start = time.time()
        model = reference if name == "reference" else load_model(path).eval()
        row = {"name": name, "path": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path), **judge(model, reference, data, tok, words, prompts, a.samples)}
        row["real_valid_words"] = real_rate
        rows.append(row)
        print(f"{name}: {row} ({time.time() - start:.0f} s)")
    ref = rows[0]
    for r in rows:
        gap = real_rate - ref["valid_words"]
        r["gap_closed"] = (r["valid_words"] - ref["valid_words"]) / gap if gap > 0 else float("nan")
        r["val_loss_vs_reference"] = r["val_loss"] / ref["val_loss"] - 1
    header = (f"Measured by `python scripts/lm_results.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} cores): "
              f"{a.prompts} validation prompts × {a.samples} samples (seed 0, temperature 1, 32 characters), the same for every model; "
              f"real continuations score {real_rate:.3f}. Loss and KL over the whole validation split.")
    lines = [header, "", "| run | val loss (nats/char) | vs reference | entropy | KL to reference | valid-word rate | gap closed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {LABELS[r['name']]} | {r['val_loss']:.4f} | {r['val_loss_vs_reference']:+.1%} | {r['entropy']:.4f} | {r['kl_ref']:.4f} | {r['valid_words']:.3f} | "
                     + ("—" if r["name"] == "reference" else f"{r['gap_closed']:.0%}") + " |")
    text = "\n".join(lines)
    baselines = ngram_baselines(data.ids["train"], data.ids["val"], len(tok))
    pre = pretrain_block(ref, baselines, latest("lm_pretrain").parent if latest("lm_pretrain") else None)
    a.docs.mkdir(parents=True, exist_ok=True)
    (a.docs / "lm_results.json").write_text(json.dumps({"header": header, "rows": rows, "baselines": baselines}, indent=2))
    (a.docs / "lm_results.md").write_text(pre + "\n\n" + text + "\n")
    plot(rows, a.docs / "figures" / "lm_frontier.png")
    if not a.no_readme:
        sys.path.insert(0, str(REPO / "scripts"))
        from compare_objectives import replace_between_markers

        replace_between_markers(REPO / "README.md", text + "\n\n![reward against KL](docs/figures/lm_frontier.png)", "lm")
        replace_between_markers(REPO / "README.md", pre, "lmpretrain")
    print(pre + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
