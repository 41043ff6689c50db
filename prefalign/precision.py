"""bf16 on a CPU that has no bf16 kernels: run fp32 instead, and say so.

The recipes ask for ``bf16-mixed`` where it is the fast path: on a CPU with AVX512-BF16 (or AMX) a training step measured
1.9x faster than fp32. On a CPU without bf16 kernels (AVX2 only: most AMD before Zen 4, many laptops) oneDNN refuses
bf16 and PyTorch runs bf16 convolutions on its slow reference path (``aten::_slow_conv2d_forward``), 9-17x *slower*
than fp32 (``scripts/bench_precision.py`` measures both on the machine at hand; the README keeps its latest report). A
recipe that asks for bf16 wants speed, not bf16 numerics, so prefalign runs such a request as ``32-true`` there, warns,
and saves the precision that ran in the run's config. ``--bf16_fallback=false`` keeps bf16 (to study its numerics, say).
"""

from __future__ import annotations

from typing import Any

import torch

BF16_PRECISIONS = frozenset({"bf16-mixed", "bf16-true", "bf16"})
FP16_MIXED_PRECISIONS = frozenset({"16-mixed", "16"})
FALLBACK_PRECISION = "32-true"


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512 with or without BF16, AMX), as PyTorch itself checks."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None:  # an old or unusual build: read the vector width PyTorch dispatches to
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return bool(check())


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether a Trainer with this ``accelerator`` setting trains on the CPU (``auto`` picks CUDA, then MPS)."""
    if accelerator is None or isinstance(accelerator, str):
        name = (accelerator or "auto").lower()
    else:  # an Accelerator instance: CPUAccelerator, CUDAAccelerator, ...
        name = type(accelerator).__name__.lower().removesuffix("accelerator")
    if name == "cpu":
        return True
    if name != "auto":
        return False
    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def resolve_precision(precision: Any, accelerator: Any, fallback: bool) -> tuple[Any, str | None]:
    """The precision to run, and a warning to show (``None``: nothing to say).

    A bf16 precision on a CPU without bf16 kernels becomes ``32-true`` when ``fallback`` is true; otherwise it is kept
    and the warning says what it costs. ``16-mixed`` on a CPU is what Lightning runs there, ``bf16-mixed`` (CPUs have
    no fp16 autocast), and then follows the bf16 rule: the saved config never says 16-mixed for a run that was not."""
    if str(precision) in FP16_MIXED_PRECISIONS and runs_on_cpu(accelerator):
        ran, warning = resolve_precision("bf16-mixed", accelerator, fallback)
        why = f"precision={precision} asked for, but a CPU has no fp16 mixed precision: Lightning runs it as bf16-mixed"
        return (
            ran,
            f"{why}; {warning}" if warning else f"{why}. Running bf16-mixed (--trainer.precision=32-true for fp32).",
        )
    if str(precision) not in BF16_PRECISIONS or not runs_on_cpu(accelerator) or cpu_has_bf16_kernels():
        return precision, None
    why = (
        f"precision={precision} asked for, but this CPU has no bf16 kernels (no AVX512/AMX; "
        f"{torch.backends.cpu.get_cpu_capability()} only): PyTorch would run bf16 convolutions on its slow reference "
        "path, 9-17x slower than fp32 on an AVX2-only CPU (scripts/bench_precision.py)"
    )
    if fallback:
        return FALLBACK_PRECISION, f"{why}. Running {FALLBACK_PRECISION} instead (--bf16_fallback=false keeps bf16)."
    return precision, f"{why}. Keeping {precision} because --bf16_fallback=false."
