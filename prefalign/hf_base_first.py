"""Reference first, for Hugging Face runs: train the base model directory when a recipe's model is missing.

An alignment recipe with ``reference_recipe`` trains its reference first when ``model.reference_ckpt`` is missing
(:mod:`prefalign.cli`). A Hugging Face run has no reference file: its reference is the model it starts from,
``model.backbone.init_args.model_name_or_path``, which :class:`~prefalign.models.HFCausalLM` loads when it is built.
So this check runs before the classes are built: when that names a local directory without ``config.json`` and the
config has a ``reference_recipe``, the recipe is run first and exports the model there (``save_pretrained``).
A hub name (``org/name``) is never trained: it is downloaded where the hub is reachable, or reported missing.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from jsonargparse import namespace_to_dict

from prefalign import preflight

SETTING = "--model.backbone.init_args.model_name_or_path"


def looks_local(name: str) -> bool:
    """A path rather than a hub name: a hub name is ``name`` or ``org/name``; a path starts with ``.``, ``/`` or ``~``,
    or has more than one folder (``artifacts/reference/x``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def missing_base_model(cfg: Any) -> str | None:
    """The backbone's ``model_name_or_path`` when this run must train it first (see the module docstring), else None."""
    if cfg.get("reference_recipe") is None:
        return None
    backbone = cfg.get("model") and cfg.model.get("backbone")
    init = backbone.get("init_args") if backbone is not None and hasattr(backbone, "get") else None
    name = init.get("model_name_or_path") if init is not None else None
    if not isinstance(name, str) or not name or not looks_local(name):
        return None
    return None if (Path(name).expanduser() / "config.json").is_file() else name


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_before_training(cfg: Any, folder: str) -> tuple[str, ...]:
    """What can refuse the run, before the base model is trained: the folder it is exported to must be writable, the
    recipe must exist, and this run's data module must accept its arguments (built once, which reads no data).
    Returns the data module's ``reference_data_keys`` (what the base model's run is given of this run's data)."""
    recipe = cfg.reference_recipe
    if not Path(recipe).is_file():
        raise FileNotFoundError(f"--reference_recipe {recipe} does not exist; it trains the missing model {folder}.")
    target = Path(folder).expanduser()
    if target.exists() and not target.is_dir():
        raise preflight.RunPathError(f"{SETTING}={folder} is a file; give the folder the base model is written to.")
    preflight.check_folder(SETTING, target.parent)
    data = cfg.get("data")
    if data is None or not data.get("class_path"):
        return ()
    cls = _import(data.class_path)
    cls(**namespace_to_dict(data.get("init_args") or {}))  # argument errors now, not after pretraining
    return tuple(getattr(cls, "reference_data_keys", ()))


__all__ = ["check_before_training", "looks_local", "missing_base_model"]
