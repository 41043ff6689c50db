#!/usr/bin/env python
"""prefalign against TRL 1.16's ``DPOTrainer``: DPO training throughput, same machine, model, data and settings.

    python scripts/bench_hf.py                          # ~20M-parameter Llama, 3 repeats; writes docs/performance.md
    python scripts/bench_hf.py --size tiny --steps 2 --repeats 1 --no-docs   # smoke run, seconds

Contenders, each measurement in its own subprocess (``scripts/bench_hf_worker.py``: own peak RSS, cold start), run
interleaved repeat by repeat so drifting load on a shared machine spreads over all of them:

* ``prefalign`` — ``python -m prefalign fit --config configs/hf_dpo.yaml --model_name_or_path DIR --dataset_name FILE``
  (in-process ``prefalign.cli.main``), reference log-probs cached at the start of fit (its default);
* ``trl`` — ``DPOTrainer`` with its defaults: the reference re-run on every step;
* ``trl_precompute`` — ``DPOTrainer`` with ``precompute_ref_log_probs=True``.

Settings are those of ``tests/hf/test_parity.py``: constant learning rate, no gradient clipping, AdamW with weight
decay 0, fp32, the same batch size, ``max_steps`` steps, no evaluation, no checkpoints, logging every step, seed 42.
The data file has exactly ``steps × batch`` rows, so the run is one epoch and each side's reference caching covers
exactly the rows it trains on. Nothing comes from the hub: the model is built from a config and saved locally, the
tokenizer trained locally (``tests/hf/tiny.py``), the rows generated.

Throughput is measured from the end of the first optimizer step to the end of the last (steps 2..N: the first step
pays one-off allocation and is left out), inside the worker by a training callback. The reference caching time is
reported separately and, pro rata (the share of the rows the timed steps used), included in a second pairs/s column.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODE = HERE.parent  # where prefalign, configs/ and tests/hf/tiny.py are (PYTHONPATH of the workers)
REPO = CODE  # the root whose docs/performance.md receives the block (the test points it to a temporary folder)
sys.path.insert(0, str(HERE))
import reporting  # noqa: E402

BLOCK = "bench-hf"
CONTENDERS = ("prefalign", "trl", "trl_precompute")
LABELS = {
    "prefalign": "prefalign `fit --config configs/hf_dpo.yaml` (reference cached, its default)",
    "trl": "TRL `DPOTrainer` (default: reference re-run every step)",
    "trl_precompute": "TRL `DPOTrainer`, `precompute_ref_log_probs=True`",
}
GOAL = 1.25  # issue #25: prefalign ≥ 1.25 × TRL's DPO throughput
LOSS_TOLERANCE = 1e-4  # what tests/hf/test_parity.py allows on the loss


# ------------------------------------------------------------------------------------------------------- model, data


def make_model(path: Path, size: str) -> int:
    """The tiny parity-test Llama (``tiny``) or a ~20M-parameter one (``20m``), with ``tests/hf/tiny.py``'s tokenizer,
    saved with ``save_pretrained``; returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.hf.tiny import make_model_dir, make_tokenizer

    if size == "tiny":
        make_model_dir(path)
        return sum(p.numel() for p in LlamaForCausalLM.from_pretrained(str(path)).parameters())
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=1408,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return sum(p.numel() for p in model.parameters())


def make_rows(n: int, size: str, seed: int = 0) -> list[dict]:
    """``n`` standard-format rows: the parity tests' short ones for ``tiny``; for ``20m`` prompts of 8-20 words and
    completions of 15-40 (tens of tokens, closer to a real completion's length)."""
    from tests.hf.tiny import WORDS, distinct_rows

    if size == "tiny":
        return distinct_rows(n, seed)
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [{"prompt": words(8, 20), "chosen": " " + words(15, 40), "rejected": " " + words(15, 40)} for _ in range(n)]


# ------------------------------------------------------------------------------------------------------- measurement


def run_worker(spec: dict, tmp: Path) -> dict:
    """One measurement in a fresh process, working directory and datasets cache (no reference cache to reuse)."""
    tmp.mkdir(parents=True)
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(spec["threads"]),
        MKL_NUM_THREADS=str(spec["threads"]),
        PYTHONPATH=os.pathsep.join([str(CODE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp / "datasets"),
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        TQDM_DISABLE="1",
        PYTHONWARNINGS="ignore",
    )
    started = time.perf_counter()
    with open(tmp / "output.log", "w") as log:
        proc = subprocess.run(
            [sys.executable, str(HERE / "bench_hf_worker.py"), "spec.json", "result.json"],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{spec['contender']} failed (exit {proc.returncode}):\n{(tmp / 'output.log').read_text()[-3000:]}"
        )
    result = json.loads((tmp / "result.json").read_text())
    result["process_s"] = time.perf_counter() - started
    return result


def summarise(result: dict, batch_size: int) -> dict:
    """Throughput over steps 2..N of one measurement (see the module docstring)."""
    ends, n = result["ends"], len(result["ends"])
    timed = max(n - 1, 1)  # with a single step, fall back to timing it from its start
    seconds = ends[-1] - ends[0] if n > 1 else ends[0] - result["start"]
    tokens = sum(result["tokens"][1:]) if n > 1 else sum(result["tokens"])
    pairs = timed * batch_size
    share = timed / n  # the part of the cached rows these steps trained on
    return {
        "loop_s": seconds,
        "pairs_s": pairs / seconds,
        "tokens_s": tokens / seconds,
        "reference_s": result["reference_s"],
        "pairs_s_incl": pairs / (seconds + result["reference_s"] * share),
        "rss_mb": result["rss_mb"],
        "losses": result["losses"],
        "tokens_per_step": statistics.mean(result["tokens"]),
        "tokens": result["tokens"],
    }


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(runs: dict[str, list[dict]], args, params: int, machine: dict, minutes: float) -> str:
    """The generated block: command, machine, the table, loss agreement and the goal."""
    base = {c: median(runs[c], "pairs_s") for c in runs}
    base_incl = {c: median(runs[c], "pairs_s_incl") for c in runs}
    lines = [
        f"Command: `python scripts/bench_hf.py --size {args.size} --steps {args.steps} --batch-size {args.batch_size} "
        f"--repeats {args.repeats} --threads {args.threads}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({minutes:.1f} min in all).",
        "",
        f"Machine: {reporting.describe_machine(machine)} (CPU capability {machine['cpu_capability']}); "
        f"{args.threads} intra-op thread(s) for both sides. Model: Llama built from a config, {params / 1e6:.1f}M "
        f"parameters, fp32; {args.steps} steps of {args.batch_size} pairs "
        f"({median(runs['prefalign'], 'tokens_per_step'):.0f} completion tokens a step, chosen + rejected).",
        "",
        "| contender | pairs/s | completion tokens/s | prefalign ÷ this | reference caching s | pairs/s incl. caching "
        "| prefalign ÷ this (incl.) | peak RSS MB | loss steps 1-3 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in CONTENDERS:
        r = runs[c]
        caches = c != "trl"
        ratio = base["prefalign"] / base[c]
        ratio_incl = base_incl["prefalign"] / base_incl[c]
        losses = ", ".join(f"{x:.6f}" for x in r[0]["losses"])
        lines.append(
            f"| {LABELS[c]} | {base[c]:.2f} | {median(r, 'tokens_s'):.0f} | {ratio:.2f} | "
            f"{median(r, 'reference_s'):.2f} | {base_incl[c]:.2f} | {ratio_incl:.2f} | {median(r, 'rss_mb'):.0f} "
            f"| {losses} |"
            if caches
            else f"| {LABELS[c]} | {base[c]:.2f} | {median(r, 'tokens_s'):.0f} | {ratio:.2f} | – | {base_incl[c]:.2f} "
            f"| {ratio_incl:.2f} | {median(r, 'rss_mb'):.0f} | {losses} |"
        )
    gap = loss_gap(runs)
    goal = base_incl["prefalign"] / base_incl["trl"]
    lines += [
        "",
        f"Medians of {args.repeats} repeat(s), each contender in its own process, interleaved. pairs/s and tokens/s: "
        "optimizer steps 2..N (end of step 1 to end of step N, measured by a callback in the training loop; "
        "interpreter start, imports, model loading and tokenization excluded). *incl. caching* adds the reference "
        "log-prob caching pro rata (the data are one epoch, so the cache covers exactly the rows trained on). "
        "Peak RSS is each process's maximum resident set.",
        "",
        f"Losses of steps 1-3 (first repeat): max |prefalign − TRL| = {gap:.1e} over both TRL rows "
        f"({'agree' if gap <= LOSS_TOLERANCE else '**disagree**'} within {LOSS_TOLERANCE:g}); completion tokens of "
        f"every step identical on all three: {'yes' if same_tokens(runs) else '**no**'} (the same batches).",
        "",
        f"Goal (issue #25): prefalign ≥ {GOAL:.2f} × TRL's DPO throughput (default `DPOTrainer`, caching included): "
        f"{goal:.2f} × — **{'met' if goal >= GOAL else 'not met'}** on this machine "
        f"(against `precompute_ref_log_probs=True`: {base_incl['prefalign'] / base_incl['trl_precompute']:.2f} × incl. "
        f"caching, {base['prefalign'] / base['trl_precompute']:.2f} × loop only).",
    ]
    return "\n".join(lines)


def loss_gap(runs: dict[str, list[dict]]) -> float:
    ours = runs["prefalign"][0]["losses"]
    return max(abs(a - b) for c in ("trl", "trl_precompute") for a, b in zip(ours, runs[c][0]["losses"]))


def same_tokens(runs: dict[str, list[dict]]) -> bool:
    """Whether every run saw the same completion tokens step by step (same rows, same order, same tokenization)."""
    return len({tuple(r["tokens"]) for c in CONTENDERS for r in runs[c]}) == 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("20m", "tiny"), default="20m", help="model: ~20M-parameter Llama or the test one")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the data are steps × batch rows)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step, both sides")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides (1: robust on a shared box)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--no-docs", action="store_true", help="print the table without writing docs/performance.md")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    machine = reporting.machine_info(args.threads)
    print(f"Machine: {reporting.describe_machine(machine)} (CPU capability {machine['cpu_capability']})", flush=True)
    sys.path.insert(0, str(CODE))  # tests.hf.tiny
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as tmp_name:
        tmp = Path(tmp_name)
        params = make_model(tmp / "model", args.size)
        rows = make_rows(args.steps * args.batch_size, args.size)
        data = tmp / "pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"Model {params / 1e6:.2f}M parameters; {len(rows)} rows in {data}", flush=True)
        spec = {
            "repo": str(CODE),
            "model_dir": str(tmp / "model"),
            "data_file": str(data),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "threads": args.threads,
        }
        raw: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
        for repeat in range(args.repeats):
            for c in CONTENDERS:  # interleaved: each repeat runs every contender once
                result = run_worker({**spec, "contender": c}, tmp / f"{c}_{repeat}")
                raw[c].append(result)
                s = summarise(result, args.batch_size)
                print(
                    f"  repeat {repeat + 1} {c:<15} {s['pairs_s']:7.2f} pairs/s  {s['tokens_s']:7.0f} tok/s  "
                    f"ref {s['reference_s']:5.2f} s  rss {s['rss_mb']:5.0f} MB  process {result['process_s']:5.1f} s  "
                    f"losses {['%.6f' % x for x in s['losses']]}",
                    flush=True,
                )
    runs = {c: [summarise(r, args.batch_size) for r in raw[c]] for c in CONTENDERS}
    text = table(runs, args, params, machine, (time.perf_counter() - started) / 60)
    print("\n" + text)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "args": vars(args) | {"json": str(args.json)}, "raw": raw})
        )
    if not args.no_docs:
        print(f"\nwrote {reporting.write_block(BLOCK, text, REPO)}")
    return text


if __name__ == "__main__":
    main()
