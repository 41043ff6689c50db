"""The offline GRPO recipe's numbers (docs/huggingface.md, block ``hfrecipe-grpo``), from its runs' logged metrics.

    python scripts/hf_grpo_recipe_results.py --run             # from a clean state: delete the recipe's tokenizer,
                                                               #   base model and runs, run the whole recipe as one
                                                               #   timed process (/usr/bin/time -v), write the block
    python scripts/hf_grpo_recipe_results.py --run-reusing-base  # the GRPO run alone, timed, on the base model there
    python scripts/hf_grpo_recipe_results.py --tune            # the tuning sweep (TUNING: short runs on the base
                                                               #   model there, runs/hf_shakespeare_grpo_tuning)
    python scripts/hf_grpo_recipe_results.py                   # only rebuild the block from the latest runs and the
                                                               #   saved time logs

Every number comes from the runs: the GRPO run's test stage (``runs/hf_shakespeare_grpo``, results_test.json: the LM
loss on the validation split's windows and the valid-word rate of samples continuing the held-out prompts, the
policy's beside its reference's and the real text's, as the DPO recipe's block), its logged training rewards
(metrics.csv), its settings (config.yaml), and the wall time of each timed process from ``/usr/bin/time -v``; the
tuning table from the tuning runs' results_test.json and config.yaml, each beside its own reference. Writes
docs/hf_grpo_recipe_results.json, the block, which says whether each part of the issue's bar is met, and the
README's family table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402
from hf_recipe_results import LIMIT_MINUTES, parse_time_log  # noqa: E402

REPO = reporting.REPO
CONFIG = "configs/hf_shakespeare_grpo.yaml"
COMMAND = ["python", "-m", "prefalign", "fit", "--config", CONFIG]
RUN = "hf_shakespeare_grpo"
# What a clean state lacks (the recipe's configs' paths); the corpus stays cached.
ARTIFACTS = ("artifacts/tokenizers/shakespeare_bpe_2048", "artifacts/reference/hf_shakespeare_llama")
TIME_LOGS = {"clean": "runs/hf_grpo_recipe_time.txt", "reused": "runs/hf_grpo_recipe_time_reused.txt"}
TUNING_RUN = "hf_shakespeare_grpo_tuning"
# The settings tried before choosing the recipe's: short runs on the base model there, each setting explicit (so a
# change of the config's defaults leaves the sweep as it was; k and the batch are the config's).
TUNING = tuple(
    (
        "--data.init_args.num_prompts=4096",
        f"--trainer.max_steps={steps}",
        f"--model.optimizer.init_args.lr={lr}",
        f"--model.objective.init_args.kl_coef={kl_coef}",
    )
    for steps, lr, kl_coef in (
        (64, 1e-4, 0.05),
        (64, 3e-4, 0.05),
        (128, 1e-4, 0.05),
        (64, 1e-4, 0.2),
        (128, 1e-4, 0.2),
        (128, 5e-5, 0.05),
        (128, 1e-4, 0.5),
        (256, 1e-4, 0.5),
        (256, 1e-4, 0.2),
    )
)
GAP_SHARE = 0.5  # the bar: close at least half of the gap between the reference's and the real text's rates
LOSS_LIMIT = 0.05  # the bar: validation loss within +5% of the reference's


def train_rewards(metrics_csv: Path) -> list[tuple[int, float]]:
    """(step, mean reward of that step's rollouts) for every logged training step."""
    with open(metrics_csv) as f:
        return [(int(r["step"]), float(r["train/reward"])) for r in csv.DictReader(f) if r.get("train/reward")]


def settings(config: dict) -> dict:
    """The tuned settings of a run's saved config.yaml."""
    objective = config["model"]["objective"]["init_args"]
    family = config["model"]["family"]["init_args"]
    data = config["data"]["init_args"]
    return {
        "k": objective["k"],
        "kl_coef": objective["kl_coef"],
        "loss_type": objective["loss_type"],
        "ppo_epochs": objective["ppo_epochs"],
        "lr": config["model"]["optimizer"]["init_args"]["lr"],
        "temperature": family["temperature"],
        "max_new_tokens": family["max_new_tokens"],
        "batch_size": data["batch_size"],
        "num_prompts": data["num_prompts"],
        "max_epochs": config["trainer"]["max_epochs"],
        "max_steps": config["trainer"].get("max_steps", -1),
    }


def bar(m: dict, prefix: str = "test") -> dict:
    """The issue's bar on one run's test metrics: the target rate, the share of the gap closed, the loss change."""
    reference, policy = m[f"{prefix}/reference/valid_words"], m[f"{prefix}/valid_words"]
    real = m[f"{prefix}/real/valid_words"]
    return {
        "target_valid_words": reference + GAP_SHARE * (real - reference),
        "gap_closed": (policy - reference) / (real - reference),
        "loss_vs_reference": m[f"{prefix}/loss"] / m[f"{prefix}/reference/loss"] - 1,
    }


def collect_tuning(root: Path) -> list[dict]:
    """One row per finished tuning run (runs/hf_shakespeare_grpo_tuning/version_*), in the order they ran."""
    rows = []
    folders = sorted(
        (root / "runs" / TUNING_RUN).glob("version_*/results_test.json"), key=lambda p: int(p.parent.name[8:])
    )
    for path in folders:
        tested = json.loads(path.read_text())
        m = tested["metrics"]
        rows.append(
            {
                "run": str(path.parent.relative_to(root)),
                "steps": tested["global_step"],
                "settings": settings(yaml.safe_load((path.parent / "config.yaml").read_text())),
                "reference_valid_words": m["test/reference/valid_words"],
                "valid_words": m["test/valid_words"],
                **bar(m),
            }
        )
    return rows


def collect(root: Path) -> dict:
    run = reporting.latest_run(RUN, "results_test.json", root)
    if run is None:
        raise SystemExit("hf_grpo_recipe_results: no finished run of the recipe under runs/; run it with --run")
    tested = json.loads((run / "results_test.json").read_text())
    m = tested["metrics"]
    rewards = train_rewards(run / "metrics.csv")
    timing = {}
    for name, rel in TIME_LOGS.items():
        if (root / rel).is_file():
            timing[name] = parse_time_log((root / rel).read_text())
    return {
        "command": " ".join(COMMAND),
        "run": str(run.relative_to(root)),
        "steps": tested["global_step"],
        "fit_seconds": tested.get("fit_seconds"),
        "settings": settings(yaml.safe_load((run / "config.yaml").read_text())),
        "reference": {"loss": m["test/reference/loss"], "valid_words": m["test/reference/valid_words"]},
        "policy": {"loss": m["test/loss"], "valid_words": m["test/valid_words"], "distinct_2": m["test/distinct_2"]},
        "real_valid_words": m["test/real/valid_words"],
        **bar(m),
        "train_reward": {"first": rewards[0], "last": rewards[-1]} if rewards else {},
        "timing": timing,
        "tuning": collect_tuning(root),
        "machine": reporting.machine_info(),
    }


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def block(r: dict) -> str:
    t, s, machine = r["timing"], r["settings"], reporting.describe_machine(r["machine"])

    def minutes(name: str, extra: str = "") -> str:
        w = t.get(name, {})
        if "wall_seconds" not in w:
            return "not measured" + (f" ({extra.lstrip('; ')})" if extra else "")
        return (
            f"**{w['wall_seconds'] / 60:.1f} minutes** ({w['cpu_seconds'] / 60:.1f} CPU-minutes, peak memory "
            f"{w['peak_rss_mb']:.0f} MB{extra})"
        )

    walls = [w["wall_seconds"] for w in t.values() if "wall_seconds" in w]
    grpo_wall = t.get("reused", t.get("clean", {})).get("wall_seconds")
    fit = f"{r['fit_seconds'] / 60:.1f} minutes" if r.get("fit_seconds") is not None else "not recorded"
    first, last = r["train_reward"].get("first"), r["train_reward"].get("last")
    lines = [
        f"Measured with `/usr/bin/time -v {r['command']}` on {machine} ({r['machine'].get('cpu_capability', '?')} "
        f"kernels), fp32: from a clean state (no tokenizer or base model; the corpus already cached), the whole process "
        f"with the base model's pretraining {minutes('clean')}; the GRPO run alone, the base model reused, "
        f"{minutes('reused', f'; its fit, training and validation: {fit}')}.",
        "",
        "| model | validation loss (nats/token) | vs pretrained | valid-word rate of samples |",
        "|---|---:|---:|---:|",
        f"| pretrained (the reference) | {r['reference']['loss']:.4f} | — | {r['reference']['valid_words']:.3f} |",
        f"| GRPO ({r['steps']} steps, `{r['run']}`) | {r['policy']['loss']:.4f} | {r['loss_vs_reference']:+.1%} "
        f"| {r['policy']['valid_words']:.3f} |",
        f"| real continuations | — | — | {r['real_valid_words']:.3f} |",
        "",
        "The bar (issue #25):",
        "",
        f"- valid-word rate at least the reference's plus half the gap to the real text's "
        f"({r['target_valid_words']:.3f}): {yes(r['policy']['valid_words'] >= r['target_valid_words'])} "
        f"({r['gap_closed']:.0%} of the gap closed);",
        f"- validation loss within +{LOSS_LIMIT:.0%} of the reference's: "
        f"{yes(r['loss_vs_reference'] <= LOSS_LIMIT)} ({r['loss_vs_reference']:+.1%});",
        f"- the GRPO run within {LIMIT_MINUTES} minutes: "
        + (
            f"{yes(grpo_wall <= LIMIT_MINUTES * 60)} ({grpo_wall / 60:.1f} minutes"
            + (
                f"; with the base model's pretraining {max(walls) / 60:.1f}: {yes(max(walls) <= LIMIT_MINUTES * 60)})."
                if "clean" in t and "reused" in t
                else ")."
            )
            if grpo_wall is not None
            else "not measured."
        ),
        "",
        f"Settings: k {s['k']} completions of {s['max_new_tokens']} tokens per prompt at temperature {s['temperature']}, "
        f"{s['batch_size']} prompts per step ({s['num_prompts']} held-in prompts, {s['max_epochs']} epoch(s)), "
        f"lr {s['lr']:g}, kl_coef {s['kl_coef']:g}, loss {s['loss_type']}, {s['ppo_epochs']} update(s) per rollout. "
        + (
            f"Mean reward of the training rollouts: {first[1]:.3f} at step {first[0]}, {last[1]:.3f} at step {last[0]}. "
            if first and last
            else ""
        )
        + f"Samples judged: 2 per held-out prompt, 16 tokens, temperature 1; word distinct-2 of the GRPO model's "
        f"{r['policy']['distinct_2']:.3f}.",
    ]
    if r.get("tuning"):
        lines += [
            "",
            f"Tuning (`--tune`: runs of the config with their steps, lr and kl_coef set, in the order tried, each on "
            f"the base model there and judged beside it; k {s['k']}, {s['batch_size']} prompts per step):",
            "",
            "| steps | lr | kl_coef | valid-word rate (reference's) | gap closed | loss vs reference | rate and loss bar met |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for t in r["tuning"]:
            met = t["gap_closed"] >= GAP_SHARE and t["loss_vs_reference"] <= LOSS_LIMIT
            lines.append(
                f"| {t['steps']} | {t['settings']['lr']:g} | {t['settings']['kl_coef']:g} | {t['valid_words']:.3f} "
                f"({t['reference_valid_words']:.3f}) | {t['gap_closed']:.0%} | {t['loss_vs_reference']:+.1%} | {yes(met)} |"
            )
    return "\n".join(lines)


def run_timed(root: Path, which: str) -> None:
    if which == "clean":
        for rel in ARTIFACTS:
            shutil.rmtree(root / rel, ignore_errors=True)
        shutil.rmtree(root / "runs" / "hf_shakespeare_pretrain", ignore_errors=True)
    elif not (root / ARTIFACTS[1] / "config.json").is_file():
        raise SystemExit(f"--run-reusing-base: no base model at {ARTIFACTS[1]}; run with --run first")
    shutil.rmtree(root / "runs" / RUN, ignore_errors=True)
    log = root / TIME_LOGS[which]
    log.parent.mkdir(parents=True, exist_ok=True)
    command = ["/usr/bin/time", "-v", "-o", str(log), sys.executable, *COMMAND[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, cwd=root, env=env, check=True)


def run_tuning(root: Path) -> None:
    """The TUNING sweep, one run after another (untimed: their numbers, not their speed, are what the table shows)."""
    if not (root / ARTIFACTS[1] / "config.json").is_file():
        raise SystemExit(f"--tune: no base model at {ARTIFACTS[1]}; run with --run first")
    shutil.rmtree(root / "runs" / TUNING_RUN, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for overrides in TUNING:
        command = [sys.executable, *COMMAND[1:], f"--trainer.logger.init_args.name={TUNING_RUN}", *overrides]
        print("running:", " ".join(command), flush=True)
        subprocess.run(command, cwd=root, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run", action="store_true", help="delete the recipe's artifacts and runs, run it timed, then write"
    )
    p.add_argument("--run-reusing-base", action="store_true", help="run the GRPO run alone, timed, then write")
    p.add_argument("--tune", action="store_true", help="run the tuning sweep (TUNING), then write")
    p.add_argument("--no-docs", action="store_true", help="only print and save the JSON")
    a = p.parse_args(argv)
    if a.run:
        run_timed(REPO, "clean")
    if a.run_reusing_base:
        run_timed(REPO, "reused")
    if a.tune:
        run_tuning(REPO)
    results = collect(REPO)
    reporting.publish_recipe_results(
        results, "hf_grpo_recipe_results.json", "hfrecipe-grpo", block(results), write_docs=not a.no_docs
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
