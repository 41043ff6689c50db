"""The command line of a run that ``fit`` starts before its own (a missing reference's recipe, a missing base model's):
it sees this run's data, seed, precision fallback and logger choice, under its own run name."""

from __future__ import annotations

import json
from typing import Any

from jsonargparse import namespace_to_dict
from lightning.pytorch import seed_everything


def reference_recipe_args(recipe: str, export_path: str, cfg: Any, data_keys: tuple[str, ...]) -> list[str]:
    """The command line of a reference recipe run for this run: it exports to ``export_path``, on one device, sees
    this run's data (``data_keys``: the data module's ``reference_data_keys``), seed, precision fallback and logger,
    then this run's ``reference_recipe_args``."""
    data = cfg.data.init_args
    args = [
        "fit",
        "--config",
        recipe,
        f"--model.export_path={export_path}",
        "--test_after_fit=false",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
    ]
    for key in data_keys:
        if key in data:
            args.append(f"--data.init_args.{key}=" + cli_value(data.get(key)))
    args.append(f"--seed_everything={cli_value(cfg.get('seed_everything'))}")
    args.append(f"--bf16_fallback={cli_value(cfg.get('bf16_fallback', True))}")
    # The reference run logs where this run logs (W&B or not, the same logger and folder), under its own name.
    args.append(f"--wandb={cli_value(bool(cfg.get('wandb', True)))}")
    # The recipe's own extra words come last, so they win.
    return args + logger_args(cfg.trainer.get("logger")) + list(cfg.get("reference_recipe_args") or [])


def reseed(cfg: Any) -> None:
    """Seed again after a nested reference run, so this run draws what it would have drawn without it."""
    seed = cfg.get("seed_everything")
    if seed is not None and seed is not False:
        seed_everything(seed if seed is not True else None)


# A nested run keeps its own run name (its recipe's) and gets a run id of its own.
_OWN_LOGGER_KEYS = ("name", "version", "id")


def logger_args(logger: Any) -> list[str]:
    """Command-line words giving a nested run this run's ``trainer.logger``: the same class and settings (save_dir,
    project, ...), but the nested recipe's own run name. ``false`` (no logger) stays ``false``."""
    if logger is None or isinstance(logger, bool):  # None is Lightning's default logger, as true is
        return [f"--trainer.logger={cli_value(logger is not False)}"]
    if isinstance(logger, (list, tuple)):  # several loggers: no recipe name to keep, so name them after this run
        loggers = [namespace_to_dict(item) for item in logger]
        for item in loggers:
            init = item.get("init_args") or {}
            for key in ("version", "id"):
                init.pop(key, None)
            if init.get("name"):
                init["name"] = f"{init['name']}_reference"
        return ["--trainer.logger=" + json.dumps(loggers)]
    logger = namespace_to_dict(logger)
    # jsonargparse keeps the recipe's init_args that the new class also takes (its run name) when class_path changes.
    args = [f"--trainer.logger={logger['class_path']}"]
    for key, value in (logger.get("init_args") or {}).items():
        if key not in _OWN_LOGGER_KEYS and value is not None and value != "":
            args.append(f"--trainer.logger.init_args.{key}={cli_value(value)}")
    return args


def cli_value(value: Any) -> str:
    """A config value as one command-line word (strings raw, everything else as JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)
