"""Precision benchmark: is bf16 the fast path on this CPU? Times the denoiser's training step and a no-grad sampling
forward in fp32 and under bf16 autocast, in the same process, and says what prefalign does with a bf16 recipe here.

    python scripts/bench_precision.py             # 3 timed repeats after 1 warm-up (about 3 minutes on an AVX2-only CPU)
    python scripts/bench_precision.py --repeats 1 --batch 16 --sample-batch 16 --no-docs   # a quick look

Same work in both precisions: the ConditionalUNet at its default channels (32/64/64, 0.7M; the diffusion recipes use
16/32/32), one AdamW step on an ε-prediction MSE at batch ``--batch``, and one forward of ``--sample-batch`` images
without gradients (a DDIM step of sampling or mining). bf16 is ``torch.autocast("cpu", torch.bfloat16)``, as
Lightning's bf16-mixed does it. Seconds are medians.
Writes benchmarks/precision.{json,md} and the block <!-- benchprecision:begin --> / <!-- benchprecision:end --> of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO


def _timed(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(batch: int, sample_batch: int, warmup: int, repeats: int) -> dict[str, dict[str, float]]:
    import torch

    from prefalign.models import ConditionalUNet

    results = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = ConditionalUNet()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, t, c = torch.randn(batch, 1, 28, 28), torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))
        xs, ts, cs = (
            torch.randn(sample_batch, 1, 28, 28),
            torch.randint(0, 1000, (sample_batch,)),
            torch.randint(0, 10, (sample_batch,)),
        )

        def train_step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = (model(x, t, c).float() - x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        @torch.no_grad()
        def forward() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(xs, ts, cs)

        results[name] = {
            "train_step_s": _timed(train_step, warmup, repeats),
            "forward_s": _timed(forward, warmup, repeats),
        }
    return results


def report(args, results: dict, machine: dict, fallback: str) -> str:
    f, b = results["fp32"], results["bf16"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in machine["flags"].items())
    lines = [
        f"Command: `python scripts/bench_precision.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; {flags}; torch {machine['torch']} (CPU capability "
        f"{machine['cpu_capability']}), {machine['threads']} thread(s); oneDNN bf16 kernels: {'yes' if machine['bf16_kernels'] else 'no'}.",
        "",
        "| ConditionalUNet | fp32 s | bf16 s | bf16 ÷ fp32 |",
        "|---|---:|---:|---:|",
        f"| training step, batch {args.batch} | {f['train_step_s']:.3f} | {b['train_step_s']:.3f} | {b['train_step_s'] / f['train_step_s']:.2f} |",
        f"| no-grad forward, {args.sample_batch} images | {f['forward_s']:.3f} | {b['forward_s']:.3f} | {b['forward_s'] / f['forward_s']:.2f} |",
        "",
        f"Medians of {args.repeats} repeats after {args.warmup} warm-up. What prefalign runs for a `bf16-mixed` recipe here: {fallback}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="training batch (configs/diffusion_pretrain.yaml's)")
    p.add_argument("--sample-batch", type=int, default=250, help="images in one no-grad forward")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/performance.md")
    args = p.parse_args(argv)

    import torch

    from prefalign.precision import cpu_has_bf16_kernels, resolve_precision

    torch.set_num_threads(args.threads)
    machine = {**reporting.machine_info(args.threads), "bf16_kernels": cpu_has_bf16_kernels()}
    results = measure(args.batch, args.sample_batch, args.warmup, args.repeats)
    ran, _ = resolve_precision("bf16-mixed", "cpu", fallback=True)
    fallback = (
        "bf16-mixed (this CPU has bf16 kernels)"
        if ran == "bf16-mixed"
        else f"{ran} (no bf16 kernels; `--bf16_fallback=false` keeps bf16)"
    )
    text = report(args, results, machine, fallback)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "results": results,
                "bf16_recipe_runs": ran,
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            indent=2,
        )
    )
    (args.out / "precision.md").write_text(text + "\n")
    if not args.no_docs:
        reporting.write_block("benchprecision", text, REPO)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
