"""Weights files: atomic writes, ``weights_only=True`` loads, and an architecture check before any copy.

A weights file is a plain dict of tensors and builtins (no pickled code)::

    {"format": "prefalign-weights/1", "class_path": "prefalign.models.SeedCNN",
     "init_args": {...}, "state_dict": {...}, "meta": {...}}

so it can be loaded with ``torch.load(..., weights_only=True)`` and rebuilt without the config that made it.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

FORMAT = "prefalign-weights/1"


class CheckpointError(RuntimeError):
    """A weights file is missing, unreadable, unsafe, or of another architecture. The message names the fix."""


class UnsafeFileError(CheckpointError):
    """A file that would run code if loaded naively (pickled objects, or a class path outside the allowlist).
    Never rebuilt over or skipped silently: someone put it there."""


def class_path_of(model: nn.Module) -> str:
    return class_path_of_class(type(model))


def class_path_of_class(cls: type) -> str:
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

    Three causes reach here: a PyTorch file whose pickle names a global (a class or function: code that would run),
    a plain Python pickle (``pickle.dump``, which torch cannot read restricted) and bytes that are no pickle at all
    (random data, a text file, a truncated download). They get different advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    blocked = next((line for line in lines if "GLOBAL" in line), None)
    if blocked is not None:
        # torch's message starts with advice to retry with weights_only=False; the useful line names the blocked global.
        found = re.search(r"GLOBAL ([\w.]+)", blocked)
        return pickled_code(path, [found.group(1)] if found else [blocked[:120]], what)
    plain = plain_pickle_globals(path)
    if plain is None:
        return corrupt_file(path, what, next((line for line in lines if "Unsupported" in line), type(error).__name__))
    if plain:
        return pickled_code(path, plain, what)
    return CheckpointError(
        f"{what} {path} is a plain Python pickle, not a PyTorch file: prefalign reads only files written by "
        "torch.save (weights files hold plain tensors). Re-export it with prefalign."
    )


def pickled_code(path: str | os.PathLike, names: list[str], what: str = "checkpoint") -> UnsafeFileError:
    return UnsafeFileError(
        f"refusing to load {what} {path}: it holds pickled objects, code that would run when unpickled "
        f"({', '.join(dict.fromkeys(names))[:160]}); prefalign loads only tensors and plain data, and nothing was run. "
        "Delete it, or use a file that prefalign wrote (weights files hold plain tensors)."
    )


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def plain_pickle_globals(path: str | os.PathLike, limit: int = 1 << 20) -> list[str] | None:
    """The globals (``module.name``) a plain pickle file would import, read with :mod:`pickletools` (which parses
    opcodes and executes nothing); None if the file is not a pickle. Only the first ``limit`` opcodes are read."""
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":  # a zip: torch's own format, already judged by torch
                return None
            f.seek(0)
            for count, (op, arg, _) in enumerate(pickletools.genops(f)):
                if op.name in _STRING_OPS and isinstance(arg, (str, bytes)):
                    strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
                elif op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]) if len(strings) >= 2 else "a global")
                elif op.name == "STOP" or count >= limit:
                    return names
    except (ValueError, EOFError, OSError, UnicodeDecodeError):
        pass
    return names or None  # a parse error after a global is still code; before any, it was no pickle


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{what} not found: {path}. Train it first (e.g. `python -m prefalign fit --config configs/sft.yaml`) or pass the right path."
        )
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it is about to refuse anyway: the error says it all.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise refused_pickle(path, e, what) from e
    except (
        RuntimeError,
        EOFError,
        OSError,
        KeyError,
        ValueError,
    ) as e:  # KeyError/ValueError: bytes that are not a pickle
        code = plain_pickle_globals(path)  # some plain pickles fail torch's reader before it meets their globals
        if code:
            raise pickled_code(path, code, what) from e
        raise corrupt_file(path, what, str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def corrupt_file(path: str | os.PathLike, what: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{what} {path} is not a readable PyTorch file: corrupt, truncated or of another format ({reason[:120]}). "
        "Delete it and train/export it again, or point to the right file."
    )


def save_weights(model: nn.Module, path: str | os.PathLike, meta: dict | None = None) -> Path:
    init_args = getattr(model, "init_args", None)
    if init_args is None:
        raise CheckpointError(
            f"{type(model).__name__} has no `init_args`; backbones must record their constructor arguments to be saved."
        )
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
    if isinstance(payload, dict) and is_lightning_checkpoint(payload):
        raise CheckpointError(
            f"{path} is a Lightning training checkpoint, not a prefalign weights file: pass it as `--ckpt_path` "
            "to fit/validate/test/predict, or give the run's exported weights (runs/<name>/version_<n>/policy.pt)."
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a prefalign weights file (format {FORMAT!r}). Export one with `python -m prefalign fit --config configs/sft.yaml`."
        )
    fields = {"class_path": str, "init_args": dict, "state_dict": dict, "meta": dict}
    broken = [k for k, kind in fields.items() if not isinstance(payload.get(k), kind)]
    if broken:
        raise CheckpointError(
            f"{path} is a damaged prefalign weights file ({', '.join(broken)} missing or of the wrong type). "
            "Export it again with prefalign."
        )
    return payload


def is_lightning_checkpoint(payload: dict) -> bool:
    return "pytorch-lightning_version" in payload or ("state_dict" in payload and "global_step" in payload)


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
        return check_lightning_checkpoint(path)


def check_lightning_checkpoint(path: str | os.PathLike) -> dict:
    """A Lightning checkpoint for ``--ckpt_path``, loaded with ``weights_only=True``; a prefalign weights file or any
    other dict is refused with the option that does take it."""
    checkpoint = safe_load(path, what="checkpoint")
    if isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT:
        raise CheckpointError(
            f"--ckpt_path {path} is a prefalign weights file, not a Lightning checkpoint: give it as --model.reference_ckpt "
            "(or as --ckpt to generate/sample/dream); --ckpt_path takes a Lightning checkpoint (runs/<name>/version_<n>/checkpoints/*.ckpt)."
        )
    if isinstance(checkpoint, dict) and checkpoint.get("hyper_parameters"):
        # prefalign's module saves no hyperparameters; a file's would choose the classes LightningCLI builds.
        raise CheckpointError(
            f"refusing --ckpt_path {path}: it carries hyper_parameters naming classes to build, which prefalign's "
            "checkpoints never do; pass a checkpoint written by prefalign fit (runs/<name>/version_<n>/checkpoints/*.ckpt)."
        )
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"--ckpt_path {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint: pass a "
            "runs/<name>/version_<n>/checkpoints/*.ckpt file written by fit."
        )
    return checkpoint
