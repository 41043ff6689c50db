"""Digests that name caches and check downloads: the sha256 of a file and a short digest of a JSON-able key.

Kept at the top of the package, importing nothing of it, because every layer uses them: the pair and judge caches,
the verified downloads (MNIST, Shakespeare, GPT-2's BPE ranks) and the scripts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(key: dict[str, Any]) -> str:
    """A short stable digest of a JSON-able key (sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def tensors_sha256(tensors: dict[str, Any]) -> str:
    """The hex sha256 of named tensors' names, dtypes, shapes and contents: a key for data by what it holds, the
    same in every process (unlike a fingerprint of the code that made it)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


__all__ = ["file_sha256", "fingerprint", "tensors_sha256"]
