"""Process-wide settings that make a run faster without changing any result; :func:`tune_process` applies them.

* **Freed memory stays in the heap.** glibc returns a freed top-of-heap region larger than its trim threshold to the
  kernel and takes large blocks straight from ``mmap``; in a Lightning run the seed CNN's ~13 MB activation buffers
  hit that on every step, which cost ~7000 page faults (~28 MB of freshly zeroed pages) and ~25% of the step time on
  the benchmark machine. Fixed thresholds (mmap only above 32 MB, trim only above 1 GB) keep those buffers in the
  heap. Memory only. Linux/glibc only; ``PREFALIGN_MALLOPT=0`` turns it off.
* **No failed NVML load on every optimizer step.** Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when it is
  imported, so that asking whether CUDA is available does not initialise CUDA (which would poison forked DataLoader
  workers): torch asks NVML instead. Without the NVIDIA driver there is no NVML library, so each check first fails to
  load ``libnvidia-ml.so.1`` and then asks the CUDA runtime anyway, as it would without the variable. ``torch.optim``
  runs that check on every ``step()``: 0.07 ms a call against 0.003 ms without the variable (2-core AMD EPYC, torch
  2.14.1), about half a second of the seed pipeline. Where the library cannot be loaded the variable changes nothing
  but the cost, so it is turned off; where NVML exists it stays as Lightning set it.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

NVML_CHECK_VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"
NVML_LIBRARY = "libnvidia-ml.so.1"  # the name torch.cuda loads


def keep_freed_memory() -> None:
    """glibc: mmap only above 32 MB, trim only above 1 GB (see the module docstring)."""
    if os.environ.get("PREFALIGN_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD (glibc's maximum)
        libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def nvml_loadable() -> bool:
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def skip_nvml_check_without_nvml() -> bool:
    """Turn the NVML-based CUDA check off when it is on, torch has CUDA, and NVML cannot be loaded; True if it did."""
    if os.environ.get(NVML_CHECK_VARIABLE) != "1" or not torch.backends.cuda.is_built() or nvml_loadable():
        return False
    os.environ[NVML_CHECK_VARIABLE] = "0"
    return True


def tune_process() -> None:
    keep_freed_memory()
    skip_nvml_check_without_nvml()
