"""The four canonical MNIST files (names, MD5s) and the IDX format they are stored in: parse, write atomically.

An uncompressed uint8 IDX file is a big-endian header, then the bytes: images ``>IIII 2051 n rows cols``,
labels ``>II 2049 n``. Where the files come from and where they are cached is :mod:`prefalign.data.mnist`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "EXPECTED_MD5",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST_FILES",
    "TEST_IMAGES",
    "TEST_LABELS",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "MNISTFormatError",
    "read_idx",
]

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

_MD5_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"


class MNISTFormatError(ValueError):
    """An IDX file has a bad header or size."""


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_MD5_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_valid(path: Path, name: str) -> bool:
    return path.is_file() and _file_md5(path) == EXPECTED_MD5[name]


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
