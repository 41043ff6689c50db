"""Weights files: atomic writes, ``weights_only=True`` loads, and an architecture check before any copy.

A weights file is a plain dict of tensors and builtins (no pickled code)::

    {"format": "prefalign-weights/1", "class_path": "prefalign.models.SeedCNN",
     "init_args": {...}, "state_dict": {...}, "meta": {...}}

so it can be loaded with ``torch.load(..., weights_only=True)`` and rebuilt without the config that made it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

FORMAT = "prefalign-weights/1"


class CheckpointError(RuntimeError):
    """A weights file is missing, unreadable, unsafe, or of another architecture. The message names the fix."""


def class_path_of(model: nn.Module) -> str:
    cls = type(model)
    module = cls.__module__
    # Record the public import path (prefalign.models.SeedCNN), not the defining file, so files stay
    # loadable if a backbone moves between modules.
    public = module.rsplit(".", 1)[0] if module.startswith("prefalign.models.") else module
    return f"{public}.{cls.__qualname__}"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def refused_pickle(path: str | os.PathLike, error: Exception, what: str = "checkpoint") -> CheckpointError:
    """The error for a file that ``torch.load(weights_only=True)`` refused.

    Two different causes reach here: a real pickle that names a global (a class or function: possibly code that
    would run) and bytes that are no pickle at all (random data, a text file, a truncated download), for which
    torch reports an unsupported opcode. They get different advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not any("GLOBAL" in line for line in lines):
        return corrupt_file(path, what, next((line for line in lines if "Unsupported" in line), type(error).__name__))
    # torch's message starts with advice to retry with weights_only=False; the useful line names the blocked global.
    reason = next(line for line in lines if "GLOBAL" in line)
    return CheckpointError(
        f"refusing to load {path}: it contains pickled objects beyond tensors and plain data ({reason}). "
        "Only load files you trust; re-export it with prefalign (weights files hold plain tensors)."
    )


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}. Train it first (e.g. `python -m prefalign fit --config configs/sft.yaml`) or pass the right path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise refused_pickle(path, e, what) from e
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as e:  # KeyError/ValueError: bytes that are not a pickle
        raise corrupt_file(path, what, str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def corrupt_file(path: str | os.PathLike, what: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{what} {path} is not a readable PyTorch file: corrupt, truncated or of another format ({reason[:120]}). "
        "Delete it and train/export it again, or point to the right file."
    )


def save_weights(model: nn.Module, path: str | os.PathLike, meta: dict | None = None) -> Path:
    init_args = getattr(model, "init_args", None)
    if init_args is None:
        raise CheckpointError(f"{type(model).__name__} has no `init_args`; backbones must record their constructor arguments to be saved.")
    payload = {
        "format": FORMAT,
        "class_path": class_path_of(model),
        "init_args": dict(init_args),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    return atomic_save(payload, path)


def load_weights(path: str | os.PathLike) -> dict:
    payload = safe_load(path, what="weights file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a prefalign weights file (format {FORMAT!r}). Export one with `python -m prefalign fit --config configs/sft.yaml`.")
    return payload


def instantiate(class_path: str, init_args: dict) -> nn.Module:
    """``cls(**init_args)`` for the class named by ``class_path`` (a freshly initialised backbone)."""
    module_name, _, cls_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**init_args)


def build_model(payload: dict) -> nn.Module:
    """Instantiate the recorded backbone class and load its weights (strict)."""
    model = instantiate(payload["class_path"], payload["init_args"])
    model.load_state_dict(payload["state_dict"])
    return model


def load_model(path: str | os.PathLike) -> nn.Module:
    return build_model(load_weights(path))


def load_into(model: nn.Module, path: str | os.PathLike) -> dict:
    """Copy weights from ``path`` into ``model`` after checking it is the same architecture; returns the payload."""
    payload = check_architecture(model, path)
    model.load_state_dict(payload["state_dict"])
    return payload


def check_architecture(model: nn.Module, path: str | os.PathLike) -> dict:
    """The weights file's payload, if it holds ``model``'s architecture (class and constructor arguments); else a clear error."""
    payload = load_weights(path)
    expected = class_path_of(model)
    mine = dict(getattr(model, "init_args", {}))
    if payload["class_path"] != expected or payload["init_args"] != mine:
        raise CheckpointError(
            f"{path} holds a {payload['class_path']}({payload['init_args']}), but the configured backbone is "
            f"{expected}({mine}). Point the reference to a checkpoint of the same architecture, or change `model.backbone`."
        )
    return payload


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that writes atomically and always loads with ``weights_only=True``.

    prefalign puts no pickled objects in Lightning checkpoints (tensors, numbers and strings only), so the
    restricted loader suffices; a file carrying pickled code is refused with a clear error.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO does not take storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return safe_load(path, what="checkpoint")
