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
    return CheckpointError(f"{what} {path} is a plain Python pickle, not a PyTorch file: prefalign reads only files written by "
                           "torch.save (weights files hold plain tensors). Re-export it with prefalign.")


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
        raise CheckpointError(f"{what} not found: {path}. Train it first (e.g. `python -m prefalign fit --config configs/sft.yaml`) or pass the right path.")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it is about to refuse anyway: the error says it all.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise refused_pickle(path, e, what) from e
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as e:  # KeyError/ValueError: bytes that are not a pickle
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
    if isinstance(payload, dict) and is_lightning_checkpoint(payload):
        raise CheckpointError(f"{path} is a Lightning training checkpoint, not a prefalign weights file: pass it as `--ckpt_path` "
                              "to fit/validate/test/predict, or give the run's exported weights (runs/<name>/version_<n>/policy.pt).")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a prefalign weights file (format {FORMAT!r}). Export one with `python -m prefalign fit --config configs/sft.yaml`.")
    fields = {"class_path": str, "init_args": dict, "state_dict": dict, "meta": dict}
    broken = [k for k, kind in fields.items() if not isinstance(payload.get(k), kind)]
    if broken:
        raise CheckpointError(f"{path} is a damaged prefalign weights file ({', '.join(broken)} missing or of the wrong type). "
                              "Export it again with prefalign.")
    return payload


def is_lightning_checkpoint(payload: dict) -> bool:
    return "pytorch-lightning_version" in payload or ("state_dict" in payload and "global_step" in payload)


def _plain(value: Any) -> bool:
    """Builtins only (what a constructor argument in a weights file may be): no tensors, no objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def allowed_class(class_path: object, source: str = "a weights file") -> type[nn.Module]:
    """The class ``class_path`` names if the allowlist has it (looked up as a string: nothing is imported), else refused."""
    from prefalign.models.registry import resolve_architecture

    cls = resolve_architecture(class_path)
    if cls is None:
        raise UnsafeFileError(
            f"refusing {source}: it names {str(class_path)[:120]!r}, which is not a known architecture, and nothing was imported. "
            "A weights file may name only a prefalign.models backbone, the backbone your config names in model.backbone, or a class "
            "registered with prefalign.models.registry.register_architecture; re-export the model with prefalign or register its class."
        )
    return cls


def instantiate(class_path: str, init_args: dict, source: str = "a weights file") -> nn.Module:
    """``cls(**init_args)`` for the class named by ``class_path`` (a freshly initialised backbone).

    ``class_path`` comes from a file, so it is looked up in the allowlist of :mod:`prefalign.models.registry` as a
    string, and nothing is imported or called unless it names an allowed ``nn.Module``; ``init_args`` must be plain data."""
    cls = allowed_class(class_path, source)
    if not isinstance(init_args, dict) or not _plain(init_args):
        raise CheckpointError(f"refusing {source}: the init_args of {class_path} are not plain data (numbers, strings, lists, dicts). "
                              "Re-export the model with prefalign.")
    try:
        return cls(**init_args)
    except UnsafeFileError as e:  # a nested class path (a LoRA's base), refused by a constructor that does not know the file
        raise UnsafeFileError(str(e).replace("refusing a weights file", f"refusing {source}", 1)) from None
    except TypeError as e:  # arguments the class does not take: a damaged or hand-made file
        raise CheckpointError(f"{source} records init_args that {class_path} does not take ({e}). Re-export the model with prefalign.") from e


def build_model(payload: dict, source: str = "a weights file") -> nn.Module:
    """Instantiate the recorded backbone class and load its weights (strict)."""
    model = instantiate(payload["class_path"], payload["init_args"], source)
    model.load_state_dict(payload["state_dict"])
    return model


def load_model(path: str | os.PathLike) -> nn.Module:
    return build_model(load_weights(path), f"weights file {path}")


def load_into(model: nn.Module, path: str | os.PathLike) -> dict:
    """Copy weights from ``path`` into ``model`` after checking it is the same architecture; returns the payload."""
    payload = check_architecture(model, path)
    model.load_state_dict(payload["state_dict"])
    return payload


def check_architecture(model: nn.Module, path: str | os.PathLike) -> dict:
    """The weights file's payload, if it holds ``model``'s architecture (class and constructor arguments); else a clear error."""
    payload = load_weights(path)
    expected = class_path_of(model)
    if payload["class_path"] != expected:
        allowed_class(payload["class_path"], f"weights file {path}")  # a file naming code says so, not "another architecture"
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
        raise CheckpointError(f"refusing --ckpt_path {path}: it carries hyper_parameters naming classes to build, which prefalign's "
                              "checkpoints never do; pass a checkpoint written by prefalign fit (runs/<name>/version_<n>/checkpoints/*.ckpt).")
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"--ckpt_path {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint: pass a "
                              "runs/<name>/version_<n>/checkpoints/*.ckpt file written by fit.")
    return checkpoint
