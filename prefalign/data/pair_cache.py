"""Fingerprinted on-disk cache for mined preference data, shared by every model family.

Mining (running a frozen model over a pool of prompts and keeping chosen/rejected responses with the reference's
log-probs) is the expensive, deterministic part of a preference run. Its result is saved under a key that hashes
every ingredient (the weights that mined it, the data, the strategy, ...): a changed ingredient changes the file
name, so a stale cache is never reused. Under DDP rank 0 mines and writes; the other ranks wait at a barrier
and read the same file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from prefalign.checkpoint import CheckpointError, UnsafeFileError, atomic_save, safe_load

log = logging.getLogger(__name__)


def cache_is_valid(path: Path, digest: str, what: str) -> bool:
    """Whether ``path`` holds a readable cache with fingerprint ``digest`` (an unsafe file raises)."""
    if not path.is_file():
        return False
    try:
        cached = safe_load(path, what=f"{what} cache")
        return isinstance(cached, dict) and cached.get("fingerprint") == digest
    except UnsafeFileError:
        raise  # pickled code where a cache belongs was put there by someone: refuse it rather than build over it
    except CheckpointError:
        log.warning("cache %s is unreadable; building it again", path)
        return False


def load_or_build(
    path: str | Path, digest: str, build: Callable[[], dict], trainer: Any = None, what: str = "mined pairs"
) -> dict:
    """Load the cache at ``path`` if its fingerprint is ``digest``, else ``build()`` it (rank 0) and save it atomically.

    ``build`` returns a dict of tensors and plain values (it is saved with ``torch.save`` and read back with
    ``weights_only=True``). Every rank returns what is on disk, so all ranks train on identical data.
    """
    path = Path(path)
    is_zero = trainer is None or trainer.global_rank == 0
    if is_zero and not cache_is_valid(path, digest, what):
        atomic_save({"fingerprint": digest, **build()}, path)
    if trainer is not None:
        trainer.strategy.barrier("prefalign-pair-cache")
    cached = safe_load(path, what=f"{what} cache")
    if not isinstance(cached, dict) or cached.get("fingerprint") != digest:
        raise CheckpointError(f"{path} does not match this run's fingerprint; delete it and rerun.")
    return cached


__all__ = ["cache_is_valid", "load_or_build"]
