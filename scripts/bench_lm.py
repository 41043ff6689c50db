"""Language-model benchmark: training characters/s through the CLI against a plain PyTorch loop doing the same work
in the same run, and rollout sampling speed.

    python scripts/bench_lm.py                # 2 repeats, 300 timed steps each (about 4 minutes on 2 cores)
    python scripts/bench_lm.py --steps 60 --repeats 1   # a quick look

Same work: the tiny-transformer notebook's TinyTransformer (configs/lm_pretrain.yaml's sizes), batch 64 × 64 characters, AdamW with the
recipe's settings, gradient clipping at 1.0, fp32, the machine's threads. prefalign runs ``fit --config
configs/lm_pretrain.yaml`` (validation, testing and W&B off) and times its training steps with a callback; the plain
loop draws random windows from the same ids. Each measurement is its own subprocess; the first ``--warmup`` steps
are not timed. Rollouts: ``LanguageFamily.rollout`` with 64 prompts of 32 characters × k = 4 samples × 32 new
characters, on the reference architecture. GPT-2 BPE: ``fit --config configs/lm_pretrain_bpe.yaml`` for ``--bpe-steps``
steps (batch 32 × 64 tokens; needs the GPT-2 vocabulary, see docs/families/language.md, GPT-2 BPE; ``--bpe-steps 0`` skips it).
Writes benchmarks/lm.{json,md} and the block <!-- benchlm:begin --> / <!-- benchlm:end --> of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO
BATCH, BLOCK = 64, 64
BPE_BATCH, BPE_VOCAB = 32, 50257  # configs/lm_pretrain_bpe.yaml


class StepTimer:
    """Wall time from the start of step ``warmup`` to the end of the last step (mixed into a Lightning Callback by the
    worker, so this file imports without Lightning)."""

    def __init__(self, warmup: int, out: str) -> None:
        self.warmup, self.out, self.start = warmup, out, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module) -> None:
        steps = trainer.global_step - self.warmup
        Path(self.out).write_text(json.dumps({"steps": steps, "seconds": time.perf_counter() - self.start}))


def worker_prefalign(steps: int, warmup: int, out: str, config: str = "configs/lm_pretrain.yaml") -> None:
    import lightning as L

    from prefalign.cli import main

    class Timer(StepTimer, L.Callback):
        pass

    sys.modules["bench_lm_timer"] = type(sys)("bench_lm_timer")
    sys.modules["bench_lm_timer"].Timer = Timer
    code = main(
        [
            "fit",
            "--config",
            str(REPO / config),
            "--wandb=false",
            "--trainer.max_epochs=1",
            f"--data.init_args.steps_per_epoch={steps + warmup}",
            "--trainer.limit_val_batches=0",
            "--test_after_fit=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.callbacks=[]",
            "--model.export_path=null",
            "--trainer.callbacks+=bench_lm_timer.Timer",
            f"--trainer.callbacks.warmup={warmup}",
            f"--trainer.callbacks.out={out}",
        ]
    )
    if code:
        raise SystemExit(code)


def parameter_counts() -> dict[str, int]:
    """Parameters of the char model and of the same model with GPT-2's vocabulary (the embedding and output layer grow)."""
    from prefalign.models import TinyTransformer

    return {
        "char": sum(p.numel() for p in TinyTransformer().parameters()),
        "bpe": sum(p.numel() for p in TinyTransformer(vocab_size=BPE_VOCAB).parameters()),
    }


def worker_plain(steps: int, warmup: int, out: str) -> None:
    import torch
    import torch.nn.functional as F

    from prefalign.data.text import CharTokenizer
    from prefalign.data.text.shakespeare import load_shakespeare
    from prefalign.models import TinyTransformer

    text = load_shakespeare()
    train = text[: int(len(text) * 0.9)]
    tok = CharTokenizer.from_text(train)
    ids = tok.encode(train)
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0025, weight_decay=0.01, betas=(0.9, 0.99))
    n = len(tok)
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        starts = torch.randint(len(ids) - BLOCK - 1, (BATCH,))
        window = ids[starts.unsqueeze(1) + torch.arange(BLOCK + 1)]
        logits = model(window[:, :-1])[..., :n]
        loss = F.cross_entropy(logits.reshape(-1, n), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    Path(out).write_text(json.dumps({"steps": steps, "seconds": time.perf_counter() - start}))


def worker_rollout(repeats: int, out: str, prompts: int = 64) -> None:
    import torch

    from prefalign.data.text import CharTokenizer
    from prefalign.families.language import LanguageFamily
    from prefalign.models import TinyTransformer

    torch.manual_seed(0)
    model = TinyTransformer().eval()
    family = LanguageFamily(max_new_tokens=32)
    family.configure(CharTokenizer("".join(chr(c) for c in range(32, 116))), model.block_size)  # 84 symbols
    batch = {"prompt": torch.randint(84, (prompts, 32))}
    family.rollout(model, batch, 4)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        family.rollout(model, batch, 4)
    seconds = time.perf_counter() - start
    Path(out).write_text(json.dumps({"samples": prompts * 4 * repeats, "seconds": seconds}))


def run(kind: str, args, tmp: Path) -> dict:
    out = tmp / f"{kind}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        kind,
        str(out),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--bpe-steps",
        str(args.bpe_steps),
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "scripts"), str(REPO), os.environ.get("PYTHONPATH", "")]),
        PREFALIGN_WANDB="0",
        PYTHONWARNINGS="ignore",
    )
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_lm: {kind} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--bpe-steps", type=int, default=20, help="timed steps of the GPT-2 BPE run, once per repeat (0: skip)"
    )
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/performance.md")
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._worker:
        kind, out = a._worker
        {
            "prefalign": lambda: worker_prefalign(a.steps, a.warmup, out),
            "plain": lambda: worker_plain(a.steps, a.warmup, out),
            "bpe": lambda: worker_prefalign(a.bpe_steps, min(a.warmup, 3), out, "configs/lm_pretrain_bpe.yaml"),
            "rollout": lambda: worker_rollout(5, out),
        }[kind]()
        return 0
    import tempfile

    import torch

    machine = reporting.machine_info(torch.get_num_threads())
    print(
        f"bench_lm on {machine['cpu']} ({machine['cores']} cores, torch {machine['torch']}, {machine['threads']} threads)",
        flush=True,
    )
    results: dict[str, list[float]] = {"prefalign": [], "plain": [], "rollout": [], "bpe": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for kind in ("plain", "prefalign"):  # alternating, so drifts in machine speed hit both
                r = run(kind, a, Path(tmp))
                results[kind].append(r["steps"] * BATCH * BLOCK / r["seconds"])
                print(f"  {kind:<9} repeat {rep + 1}: {results[kind][-1] / 1e3:.1f}k characters/s", flush=True)
            r = run("rollout", a, Path(tmp))
            results["rollout"].append(r["samples"] / r["seconds"])
            if a.bpe_steps > 0:
                r = run("bpe", a, Path(tmp))
                results["bpe"].append(r["steps"] * BPE_BATCH * BLOCK / r["seconds"])
                print(f"  bpe       repeat {rep + 1}: {results['bpe'][-1] / 1e3:.2f}k tokens/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items() if v}
    params = parameter_counts()
    ratio = med["plain"] / med["prefalign"]
    words = sys.argv[1:] if argv is None else argv
    text = (
        f"Measured by `python scripts/bench_lm.py{' ' + ' '.join(words) if words else ''}` on {time.strftime('%Y-%m-%d')} "
        f"({machine['cpu']}, {machine['cores']} cores, {machine['threads']} threads, torch {machine['torch']}; median of {a.repeats}, "
        f"{a.steps} timed steps each after {a.warmup} untimed).\n\n"
        "| LM training, fp32 | characters/s | time per step vs plain |\n|---|---:|---:|\n"
        f"| plain PyTorch loop | {med['plain'] / 1e3:.1f}k | 1.00× |\n"
        f"| prefalign `fit --config configs/lm_pretrain.yaml` | {med['prefalign'] / 1e3:.1f}k | {ratio:.2f}× |\n\n"
        f"Rollouts (`LanguageFamily.rollout`, 64 prompts × 4 samples × 32 new characters, no KV cache): "
        f"{med['rollout']:.0f} samples/s."
    )
    if "bpe" in med:
        char_step, bpe_step = BATCH * BLOCK / med["prefalign"], BPE_BATCH * BLOCK / med["bpe"]
        text += (
            f"\n\nGPT-2 BPE (`fit --config configs/lm_pretrain_bpe.yaml`, batch {BPE_BATCH} × {BLOCK} tokens, {a.bpe_steps} timed steps): "
            f"{med['bpe'] / 1e3:.2f}k tokens/s, {bpe_step:.2f} s a step against {char_step:.2f} s for the char model's batch "
            f"{BATCH} × {BLOCK}; {params['bpe'] / 1e6:.1f}M parameters against {params['char'] / 1e6:.1f}M (the embedding and "
            f"output layer grow to {BPE_VOCAB:,} rows)."
        )
    out = REPO / "benchmarks"
    out.mkdir(exist_ok=True)
    (out / "lm.json").write_text(
        json.dumps(
            {"machine": machine, "results": results, "median": med, "ratio": ratio, "parameters": params}, indent=2
        )
    )
    (out / "lm.md").write_text(text + "\n")
    if not a.no_docs:
        reporting.write_block("benchlm", text, REPO)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
