"""The run's ``config.yaml``, written into the run folder when the run starts, and sent to every logger."""

from __future__ import annotations

from typing import Any

from jsonargparse import namespace_to_dict
from lightning.pytorch.cli import SaveConfigCallback

from prefalign.loggers import run_dir


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder (Lightning's behaviour) and also sends the resolved config to
    every logger (W&B shows it as the run config; CSV/TensorBoard write it as hparams).

    It writes when the run starts (``on_fit_start`` and friends), not in ``setup`` as Lightning does: the data and
    model ``setup`` hooks check the data and the reference first, so a run stopped by bad input leaves no
    folder behind."""

    def setup(self, trainer, pl_module, stage) -> None:
        if not self.save_to_log_dir:
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "fit")

    def on_validation_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "validate")

    def on_test_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "test")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "predict")

    def _save(self, trainer, pl_module, stage) -> None:
        # Lightning writes to trainer.log_dir, which for W&B is the save_dir shared by all runs: use the run's folder.
        if self.already_saved or not self.save_to_log_dir:
            return
        folder = run_dir(trainer)  # a broadcast under DDP
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                str(folder / self.config_filename),
                skip_none=False,
                overwrite=self.overwrite,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer, pl_module, stage) -> None:
        config = namespace_to_dict(self.config)
        config.pop("config", None)
        for logger in trainer.loggers:
            logger.log_hyperparams(_flatten(config))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out
