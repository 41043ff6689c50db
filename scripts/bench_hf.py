#!/usr/bin/env python
"""prefalign against TRL 1.16's ``DPOTrainer``: DPO training throughput, same machine, model, data and settings.

    python scripts/bench_hf.py                          # ~20M-parameter Llama, 3 repeats; writes docs/performance.md
    python scripts/bench_hf.py --size tiny --steps 2 --repeats 1 --no-docs   # smoke run, seconds
    python scripts/bench_hf.py --from-json docs/bench_hf_results.json      # the block again from saved measurements
    python scripts/bench_hf.py --method grpo            # GRPO against TRL's GRPOTrainer instead (scripts/bench_hf_grpo.py)

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

Throughput is the batch ÷ the median duration of optimizer steps 2..N over every repeat (the first step pays one-off
allocation and is left out; a median over steps ignores a neighbour's burst on a shared machine), step ends taken inside
the worker by a training callback. The reference caching time is reported separately and, pro rata (one batch's share
of it per step), included in a second pairs/s column. ``--json`` saves every measurement, ``--from-json`` rebuilds the
block from them without running anything.
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
import bench_hf_grpo  # noqa: E402
import reporting  # noqa: E402

BLOCK = "bench-hf"  # the ~20M-parameter model's block; --size tiny writes bench-hf-tiny (both on the page)
CONTENDERS = ("prefalign", "trl", "trl_precompute")
LABELS = {
    "prefalign": "prefalign `fit --config configs/hf_dpo.yaml` (its defaults: reference cached, prompt shared, 2 length buckets)",
    "trl": "TRL `DPOTrainer` (default: reference re-run every step)",
    "trl_precompute": "TRL `DPOTrainer`, `precompute_ref_log_probs=True`",
}
GOAL = 1.25  # issue #25: prefalign ≥ 1.25 × TRL's DPO throughput
LOSS_TOLERANCE = 1e-4  # what tests/hf/test_parity.py allows on the loss
# The ~20M-parameter Llama (17.8M with the tiny tokenizer's 120 ids): tests/hf/tiny.py's model at these sizes.
LLAMA_20M = {
    "hidden_size": 512,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 1408,
    "max_position_embeddings": 512,
}


# ------------------------------------------------------------------------------------------------------- model, data


def make_model(path: Path, size: str) -> int:
    """The tiny parity-test Llama (``tiny``) or a ~20M-parameter one (``20m``), with ``tests/hf/tiny.py``'s tokenizer,
    saved with ``save_pretrained``; returns the parameter count."""
    from transformers import LlamaForCausalLM

    from tests.hf.tiny import make_model_dir

    sizes = {} if size == "tiny" else LLAMA_20M
    make_model_dir(path, **sizes)
    return sum(p.numel() for p in LlamaForCausalLM.from_pretrained(str(path)).parameters())


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
    """One measurement in a fresh process, working directory and datasets cache (no reference cache to reuse); the
    GRPO mode's spec names its own worker."""
    worker = bench_hf_grpo.WORKER if spec.get("method") == "grpo" else "bench_hf_worker.py"
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
            [sys.executable, str(HERE / worker), "spec.json", "result.json"],
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


def step_times(result: dict) -> list[float]:
    """Durations of steps 2..N (the first pays one-off allocation), or of the only step."""
    ends = result["ends"]
    return [b - a for a, b in zip(ends, ends[1:])] or [ends[0] - result["start"]]


def aggregate(raw: list[dict], batch_size: int) -> dict:
    """One contender over its repeats. The step time is the median over every timed step of every repeat: on a shared
    machine a neighbour's burst slows a few steps, which a median over steps ignores and a per-run mean does not (the
    same choice as scripts/bench.py's epoch rows). The reference caching is added per step: its median ÷ the steps of
    one run (the data are one epoch, so each step's share of the cache is one batch's rows)."""
    steps = [t for r in raw for t in step_times(r)]
    step = statistics.median(steps)
    cache = statistics.median(r["reference_s"] for r in raw)
    tokens = [t for r in raw for t in (r["tokens"][1:] or r["tokens"])]
    return {
        "step_s": step,
        "n": len(steps),
        "pairs_s": batch_size / step,
        "tokens_s": statistics.mean(tokens) / step,
        "reference_s": cache,
        "pairs_s_incl": batch_size / (step + cache / len(raw[0]["ends"])),
        "rss_mb": statistics.median(r["rss_mb"] for r in raw),
        "losses": raw[0]["losses"],
        "per_repeat": [summarise(r, batch_size)["pairs_s"] for r in raw],
        "tokens_per_step": statistics.mean(t for r in raw for t in r["tokens"]),
    }


def table(raw: dict[str, list[dict]], args, params: int, machine: dict, when: str) -> str:
    """The generated block: command, machine, the table, loss agreement and the goal."""
    runs = {c: aggregate(raw[c], args.batch_size) for c in CONTENDERS}
    base = {c: runs[c]["pairs_s"] for c in runs}
    base_incl = {c: runs[c]["pairs_s_incl"] for c in runs}
    lines = [
        f"Command: `python scripts/bench_hf.py --size {args.size} --steps {args.steps} --batch-size {args.batch_size} "
        f"--repeats {args.repeats} --threads {args.threads}`, {when}.",
        "",
        f"Machine: {reporting.describe_machine(machine)} (CPU capability {machine['cpu_capability']}); "
        f"{args.threads} intra-op thread(s) for both sides. Model: Llama built from a config, {count(params)} "
        f"parameters, fp32; {args.steps} steps of {args.batch_size} pairs "
        f"({runs['prefalign']['tokens_per_step']:.0f} completion tokens a step, chosen + rejected).",
        "",
        "| contender | pairs/s | completion tokens/s | prefalign ÷ this | reference caching s | pairs/s incl. caching "
        "| prefalign ÷ this (incl.) | peak RSS MB | loss steps 1-3 | pairs/s of each repeat |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in CONTENDERS:
        r = runs[c]
        cache = f"{r['reference_s']:.2f}" if c != "trl" else "–"
        lines.append(
            f"| {LABELS[c]} | {base[c]:.2f} | {r['tokens_s']:.0f} | {base['prefalign'] / base[c]:.2f} | {cache} "
            f"| {base_incl[c]:.2f} | {base_incl['prefalign'] / base_incl[c]:.2f} | {r['rss_mb']:.0f} "
            f"| {', '.join(f'{x:.6f}' for x in r['losses'])} | {', '.join(f'{x:.2f}' for x in r['per_repeat'])} |"
        )
    gap = loss_gap(runs)
    goal = base_incl["prefalign"] / base_incl["trl"]
    lines += [
        "",
        f"{args.repeats} repeat(s), each contender in its own process, interleaved. pairs/s and tokens/s: the batch "
        f"÷ the median duration of optimizer steps 2..N over all repeats ({runs['trl']['n']} steps a contender; "
        "step ends taken by a callback in the training loop, so interpreter start, imports, model loading and "
        "tokenization are excluded). *incl. caching* adds the median reference log-prob caching time pro rata, per "
        "step (the data are one epoch, so the cache covers exactly the rows trained on). *each repeat*: pairs/s of "
        "each run over its whole window (end of step 1 to end of step N), to show the spread. Peak RSS: median of "
        "each process's maximum resident set.",
        "",
        f"Losses of steps 1-3 (first repeat): max |prefalign − TRL| = {gap:.1e} over both TRL rows "
        f"({'agree' if gap <= LOSS_TOLERANCE else '**disagree**'} within {LOSS_TOLERANCE:g}); completion tokens of "
        f"every step identical on all three: {'yes' if same_tokens(raw) else '**no**'} (the same batches).",
        "",
        f"Goal (issue #25): prefalign ≥ {GOAL:.2f} × TRL's DPO throughput (default `DPOTrainer`, caching included): "
        f"{goal:.2f} × — **{'met' if goal >= GOAL else 'not met'}** on this machine; training loop alone "
        f"{base['prefalign'] / base['trl']:.2f} × (the caching is a reference forward pass over every row "
        "before the first step). Against `precompute_ref_log_probs=True`: "
        f"{base_incl['prefalign'] / base_incl['trl_precompute']:.2f} × incl. caching, "
        f"{base['prefalign'] / base['trl_precompute']:.2f} × loop only.",
    ]
    return "\n".join(lines)


def count(params: int) -> str:
    """A parameter count as the table prints it: 17.8M parameters, or 26k for the tiny model (not 0.0M)."""
    return f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params / 1e3:.0f}k"


def dpo_block(size: str) -> str:
    """The docs block of a DPO run at ``size``: one per model size, so the tiny model's row does not replace the 20M's."""
    return BLOCK if size == "20m" else f"{BLOCK}-{size}"


def loss_gap(runs: dict[str, dict]) -> float:
    ours = runs["prefalign"]["losses"]
    return max(abs(a - b) for c in ("trl", "trl_precompute") for a, b in zip(ours, runs[c]["losses"]))


def same_tokens(raw: dict[str, list[dict]]) -> bool:
    """Whether every run saw the same completion tokens step by step (same rows, same order, same tokenization)."""
    return len({tuple(r["tokens"]) for c in CONTENDERS for r in raw[c]}) == 1


def rebuild(args: argparse.Namespace) -> str:
    """The block again from saved measurements (same numbers, e.g. after a change in how they are summarised)."""
    saved = json.loads(args.from_json.read_text())
    run_args = argparse.Namespace(**({"method": "dpo"} | saved["args"]))
    grpo = run_args.method == "grpo"
    params = saved.get("params")
    if params is None:  # saved before the count was stored: the model is deterministic, build it again
        sys.path.insert(0, str(CODE))
        with tempfile.TemporaryDirectory() as tmp:
            params = make_model(Path(tmp) / "model", run_args.size)
    when = saved.get("when") or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(args.from_json.stat().st_mtime))
    text = (bench_hf_grpo.table if grpo else table)(saved["raw"], run_args, params, saved["machine"], when)
    print(text)
    if not args.no_docs:
        print(f"\nwrote {reporting.write_block(bench_hf_grpo.BLOCK if grpo else dpo_block(run_args.size), text, REPO)}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=("dpo", "grpo"), default="dpo", help="grpo: see scripts/bench_hf_grpo.py")
    p.add_argument("--size", choices=("20m", "tiny"), default="20m", help="model: ~20M-parameter Llama or the test one")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the data are steps × batch rows)")
    p.add_argument("--batch-size", type=int, default=8, help="DPO: pairs per step, both sides")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides (1: robust on a shared box)")
    p.add_argument("--lr", type=float, help="default: 1e-4 (DPO), 1e-6 (GRPO: TRL's default)")
    p.add_argument("--no-docs", action="store_true", help="print the table without writing docs/performance.md")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    p.add_argument("--from-json", type=Path, help="rebuild the table from measurements saved by --json (runs nothing)")
    bench_hf_grpo.add_arguments(p)
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = bench_hf_grpo.DEFAULTS["lr"] if args.method == "grpo" else 1e-4
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.from_json:
        return rebuild(args)
    started = time.perf_counter()
    machine = reporting.machine_info(args.threads)
    print(f"Machine: {reporting.describe_machine(machine)} (CPU capability {machine['cpu_capability']})", flush=True)
    sys.path.insert(0, str(CODE))  # tests.hf.tiny
    grpo = args.method == "grpo"
    contenders = bench_hf_grpo.CONTENDERS if grpo else CONTENDERS
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as tmp_name:
        tmp = Path(tmp_name)
        params = make_model(tmp / "model", args.size)
        rows = make_rows(args.steps * (args.prompts if grpo else args.batch_size), args.size)
        rows = bench_hf_grpo.prompt_rows(rows) if grpo else rows
        data = tmp / ("prompts.jsonl" if grpo else "pairs.jsonl")
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
        } | (bench_hf_grpo.spec(args) if grpo else {})
        raw: dict[str, list[dict]] = {c: [] for c in contenders}
        for repeat in range(args.repeats):
            for c in contenders:  # interleaved: each repeat runs every contender once
                result = run_worker({**spec, "contender": c}, tmp / f"{c}_{repeat}")
                raw[c].append(result)
                if grpo:
                    print(bench_hf_grpo.progress(repeat, c, result), flush=True)
                    continue
                s = summarise(result, args.batch_size)
                print(
                    f"  repeat {repeat + 1} {c:<15} {s['pairs_s']:7.2f} pairs/s  {s['tokens_s']:7.0f} tok/s  "
                    f"ref {s['reference_s']:5.2f} s  rss {s['rss_mb']:5.0f} MB  process {result['process_s']:5.1f} s  "
                    f"losses {['%.6f' % x for x in s['losses']]}",
                    flush=True,
                )
    minutes = (time.perf_counter() - started) / 60
    when = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({minutes:.1f} min in all)"
    if args.json:
        saved = {"machine": machine, "args": vars(args) | {"json": str(args.json)}, "params": params, "when": when}
        args.json.write_text(json.dumps(saved | {"raw": raw}))
    text = (bench_hf_grpo.table if grpo else table)(raw, args, params, machine, when)
    print("\n" + text)
    if not args.no_docs:
        print(f"\nwrote {reporting.write_block(bench_hf_grpo.BLOCK if grpo else dpo_block(args.size), text, REPO)}")
    return text


if __name__ == "__main__":
    main()
