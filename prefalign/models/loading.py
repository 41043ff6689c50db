"""Building a model from a weights file: the allowlisted class, plain ``init_args``, strict weights.

:mod:`prefalign.checkpoint` reads and writes the files (plain tensors, ``weights_only=True``); this module turns a
file's payload into an ``nn.Module``. It lives with the models because it needs to know them (the allowlist of
:mod:`prefalign.models.registry`), while the file layer knows no model, so the two never import each other in a circle.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from prefalign.checkpoint import CheckpointError, UnsafeFileError, class_path_of, load_weights


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
        raise CheckpointError(
            f"refusing {source}: the init_args of {class_path} are not plain data (numbers, strings, lists, dicts). "
            "Re-export the model with prefalign."
        )
    try:
        return cls(**init_args)
    except (
        UnsafeFileError
    ) as e:  # a nested class path (a LoRA's base), refused by a constructor that does not know the file
        raise UnsafeFileError(str(e).replace("refusing a weights file", f"refusing {source}", 1)) from None
    except TypeError as e:  # arguments the class does not take: a damaged or hand-made file
        raise CheckpointError(
            f"{source} records init_args that {class_path} does not take ({e}). Re-export the model with prefalign."
        ) from e


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
        allowed_class(
            payload["class_path"], f"weights file {path}"
        )  # a file naming code says so, not "another architecture"
    mine = dict(getattr(model, "init_args", {}))
    if payload["class_path"] != expected or payload["init_args"] != mine:
        raise CheckpointError(
            f"{path} holds a {payload['class_path']}({payload['init_args']}), but the configured backbone is "
            f"{expected}({mine}). Point the reference to a checkpoint of the same architecture, or change `model.backbone`."
        )
    return payload
