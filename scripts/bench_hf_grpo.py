"""The GRPO mode of ``scripts/bench_hf.py``: prefalign against TRL 1.16's ``GRPOTrainer`` with ``transformers``
generation, samples (completions generated and trained on) per second.

    python scripts/bench_hf.py --method grpo                      # ~20M-parameter Llama, 3 repeats; docs/performance.md
    python scripts/bench_hf.py --method grpo --size tiny --steps 2 --repeats 1 --no-docs   # smoke run

Contenders, each measurement in its own subprocess (``scripts/bench_hf_grpo_worker.py``), interleaved repeat by repeat:

* ``prefalign`` — ``python -m prefalign fit --config configs/hf_grpo.yaml --model_name_or_path DIR --dataset_name FILE``
  (in-process ``prefalign.cli.main``);
* ``trl`` — ``GRPOTrainer`` (``use_vllm=False``: ``transformers``' ``generate``), configured as prefalign runs.

One step is, on both sides, one generation batch of ``prompts × k`` completions (``generate`` with the KV cache), the
reward of each, group-normalised advantages and one AdamW update on them (TRL: ``per_device_train_batch_size`` =
``prompts × k``, ``gradient_accumulation_steps`` = ``steps_per_generation`` = ``num_iterations`` = 1; prefalign: data
``batch_size`` = ``prompts``, ``ppo_epochs`` 1). Same settings otherwise: temperature, top-p 1, no top-k, ``beta`` 0
(TRL's default: no reference model on either side), loss ``dapo``, ``epsilon`` 0.2, fused AdamW (TRL's default
optimizer) with a constant learning rate and weight decay 0, no gradient clipping, no gradient checkpointing, fp32, no
evaluation, no checkpoints, logging every step, seed 42. The reward is ``prefalign.families.hf.TargetLength(20)``
(TRL's quickstart ``reward_len``: minus the distance of the completion's length in characters from 20), the same
Python callable on both sides.

Sampling is random, so the two sides generate different completions; what costs is their length. By default
``min_new_tokens`` = ``max_new_tokens`` on both sides (``transformers`` masks EOS until then), so every completion is
exactly ``max_new_tokens`` tokens long and both do the same work per step whatever the policy prefers;
``--min-new-tokens 0`` lets completions stop at a sampled EOS (the block then flags a length difference).

Throughput: completions per step ÷ the median duration of optimizer steps 2..N over every repeat (step ends taken by a
callback in each training loop), completion tokens/s likewise, as the DPO mode.
"""

from __future__ import annotations

import argparse
import statistics

import reporting

BLOCK = "bench-hf-grpo"
CONTENDERS = ("prefalign", "trl")
WORKER = "bench_hf_grpo_worker.py"
LABELS = {
    "prefalign": "prefalign `fit --config configs/hf_grpo.yaml`",
    "trl": "TRL `GRPOTrainer`, `transformers` generation",
}
GOAL = 1.0  # issue #25: prefalign's GRPO samples/s ≥ 1 × TRL's
TARGET = 20  # TargetLength's target, in characters
LENGTH_TOLERANCE = 0.1  # mean completion lengths further apart than this (relative) are flagged in the block
DEFAULTS = {"lr": 1e-6}  # TRL's GRPOConfig.learning_rate and configs/hf_grpo.yaml's


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("GRPO (--method grpo)")
    g.add_argument("--prompts", type=int, default=2, help="prompts per step, both sides")
    g.add_argument("--k", type=int, default=8, help="completions per prompt (TRL's num_generations)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="TRL's max_completion_length")
    g.add_argument(
        "--min-new-tokens",
        type=int,
        help="no EOS before this many tokens (default: --max-new-tokens, every completion that long; 0: stop at EOS)",
    )
    g.add_argument("--temperature", type=float, default=1.0)


def prompt_rows(rows: list[dict]) -> list[dict]:
    """Prompt-only rows (TRL's standard GRPO format) from the DPO mode's rows: their prompts."""
    return [{"prompt": r["prompt"]} for r in rows]


def spec(args: argparse.Namespace) -> dict:
    """What the workers need beyond the model, the data and the thread count."""
    return {
        "method": "grpo",
        "steps": args.steps,
        "prompts": args.prompts,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.max_new_tokens if args.min_new_tokens is None else args.min_new_tokens,
        "temperature": args.temperature,
        "lr": args.lr,
        "target": TARGET,
    }


def command(args: argparse.Namespace) -> str:
    extra = "" if args.min_new_tokens is None else f" --min-new-tokens {args.min_new_tokens}"
    return (
        f"python scripts/bench_hf.py --method grpo --size {args.size} --steps {args.steps} --prompts {args.prompts} "
        f"--k {args.k} --max-new-tokens {args.max_new_tokens}{extra} --temperature {args.temperature:g} "
        f"--lr {args.lr:g} --repeats {args.repeats} --threads {args.threads}"
    )


# ------------------------------------------------------------------------------------------------------- measurement


def timed(values: list, n_steps: int) -> list:
    """The per-step values of steps 2..N (all of them for a one-step run)."""
    return values[1:] if n_steps > 1 else values


def step_times(result: dict) -> list[float]:
    """Durations of steps 2..N (the first pays one-off allocation and the tokenizer's loading), or of the only step."""
    ends = result["ends"]
    return [b - a for a, b in zip(ends, ends[1:])] or [ends[0] - result["start"]]


def summarise(result: dict) -> dict:
    """One run over its whole timed window (end of step 1 to end of step N)."""
    ends, n = result["ends"], len(result["ends"])
    seconds = ends[-1] - ends[0] if n > 1 else ends[0] - result["start"]
    return {
        "samples_s": sum(timed(result["completions"], n)) / seconds,
        "tokens_s": sum(timed(result["tokens"], n)) / seconds,
        "mean_length": sum(result["tokens"]) / sum(result["completions"]),
        "rss_mb": result["rss_mb"],
    }


def aggregate(raw: list[dict]) -> dict:
    """One contender over its repeats: the median step over every timed step of every repeat (a neighbour's burst on
    a shared machine slows a few steps, which a median ignores), the completions and tokens of a timed step."""
    steps = [t for r in raw for t in step_times(r)]
    step = statistics.median(steps)
    completions = [c for r in raw for c in timed(r["completions"], len(r["ends"]))]
    tokens = [t for r in raw for t in timed(r["tokens"], len(r["ends"]))]
    return {
        "step_s": step,
        "n": len(steps),
        "samples_s": statistics.mean(completions) / step,
        "tokens_s": statistics.mean(tokens) / step,
        "samples_per_step": statistics.mean(c for r in raw for c in r["completions"]),
        "mean_length": sum(sum(r["tokens"]) for r in raw) / sum(sum(r["completions"]) for r in raw),
        "reward": statistics.mean(x for r in raw for x in r["rewards"]),
        "rss_mb": statistics.median(r["rss_mb"] for r in raw),
        "per_repeat": [summarise(r)["samples_s"] for r in raw],
    }


def progress(repeat: int, contender: str, result: dict) -> str:
    s = summarise(result)
    return (
        f"  repeat {repeat + 1} {contender:<10} {s['samples_s']:7.2f} samples/s  {s['tokens_s']:7.0f} tok/s  "
        f"mean length {s['mean_length']:5.1f}  rss {s['rss_mb']:5.0f} MB  process {result['process_s']:5.1f} s"
    )


def length_note(runs: dict[str, dict], args: argparse.Namespace, forced: int) -> str:
    ours, theirs = runs["prefalign"]["mean_length"], runs["trl"]["mean_length"]
    gap = abs(ours - theirs) / max(ours, theirs)
    if forced >= args.max_new_tokens:
        why = (
            f"`min_new_tokens` = `max_new_tokens` = {args.max_new_tokens} on both sides (`transformers` masks EOS "
            "until then), so every completion is exactly that long and both sides do the same work per step whatever "
            "the sampled tokens"
        )
    else:
        why = f"completions stop at a sampled EOS (`min_new_tokens` {forced}), so their lengths are random"
    verdict = (
        f"within {LENGTH_TOLERANCE:.0%}"
        if gap <= LENGTH_TOLERANCE
        else f"**{gap:.0%} apart: the side with the longer completions does more work a step; compare tokens/s**"
    )
    return f"Mean completion length: prefalign {ours:.1f}, TRL {theirs:.1f} tokens ({verdict}); {why}."


def table(raw: dict[str, list[dict]], args: argparse.Namespace, params: int, machine: dict, when: str) -> str:
    """The generated block: command, machine, settings, the table, completion lengths and the goal."""
    runs = {c: aggregate(raw[c]) for c in CONTENDERS}
    settings = spec(args)
    samples = {c: runs[c]["samples_s"] for c in CONTENDERS}
    tokens = {c: runs[c]["tokens_s"] for c in CONTENDERS}
    lines = [
        f"Command: `{command(args)}`, {when}.",
        "",
        f"Machine: {reporting.describe_machine(machine)} (CPU capability {machine['cpu_capability']}); "
        f"{args.threads} intra-op thread(s) for both sides. Model: Llama built from a config, {params / 1e6:.1f}M "
        f"parameters, fp32; {args.steps} steps of {args.prompts} prompts × k = {args.k} completions "
        f"({args.prompts * args.k} samples a step) of at most {args.max_new_tokens} tokens, temperature "
        f"{args.temperature:g}, top-p 1, no top-k; reward `TargetLength({TARGET})` (TRL's quickstart `reward_len`), "
        f"the same Python callable on both sides; `beta` 0 (no reference model), loss `dapo`, one fused-AdamW update "
        f"per generation batch, learning rate {args.lr:g} constant, no clipping, no gradient checkpointing.",
        "",
        "| contender | samples/s | completion tokens/s | prefalign ÷ this | mean completion length | samples a step "
        "| mean reward | peak RSS MB | samples/s of each repeat |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in CONTENDERS:
        r = runs[c]
        lines.append(
            f"| {LABELS[c]} | {samples[c]:.2f} | {tokens[c]:.0f} | {samples['prefalign'] / samples[c]:.2f} "
            f"| {r['mean_length']:.1f} | {r['samples_per_step']:.0f} | {r['reward']:.2f} | {r['rss_mb']:.0f} "
            f"| {', '.join(f'{x:.2f}' for x in r['per_repeat'])} |"
        )
    goal = samples["prefalign"] / samples["trl"]
    lines += [
        "",
        f"{args.repeats} repeat(s), each contender in its own process, interleaved. A step is one generation batch "
        "(`transformers`' `generate` with its KV cache, the reward, group advantages) and one optimizer update on it, "
        "on both sides (TRL: `per_device_train_batch_size` = prompts × k, `gradient_accumulation_steps` = "
        "`steps_per_generation` = `num_iterations` = 1; prefalign: data `batch_size` = prompts, `ppo_epochs` 1). "
        f"samples/s and tokens/s: a step's completions (tokens) ÷ the median duration of optimizer steps 2..N over all "
        f"repeats ({runs['trl']['n']} steps a contender; step ends taken by a callback in the training loop, so "
        "interpreter start, imports, model loading and tokenization are excluded). *each repeat*: samples/s of each run "
        "over its whole window (end of step 1 to end of step N). Mean reward: over every step (different samples on "
        "the two sides: not expected to agree). Peak RSS: median of each process's maximum resident set.",
        "",
        length_note(runs, args, settings["min_new_tokens"]),
        "",
        f"Goal (issue #25): GRPO samples/s ≥ {GOAL:g} × TRL's (`GRPOTrainer` with `transformers` generation): "
        f"{goal:.2f} × — **{'met' if goal >= GOAL else 'not met'}** on this machine (completion tokens/s: "
        f"{tokens['prefalign'] / tokens['trl']:.2f} ×).",
    ]
    return "\n".join(lines)
