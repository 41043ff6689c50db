"""Loggers: Weights & Biases that works without an account, and the run folder whatever the logger.

Every recipe logs to W&B by default: the CLI adds a :class:`WandbLogger` beside the recipe's CSV logger (``--wandb
false`` or ``PREFALIGN_WANDB=0`` turns it off). ``configs/logger/wandb.yaml`` makes it the only logger, with its own
options; compose it after a recipe::

    python -m prefalign fit --config configs/dpo.yaml --config configs/logger/wandb.yaml

Without an API key (no ``$WANDB_API_KEY``, no ``api.wandb.ai`` entry in ``~/.netrc``) the run is written
offline under ``runs/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


def wandb_api_key_available() -> bool:
    """Whether ``wandb`` could log in without asking: ``$WANDB_API_KEY`` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with prefalign's defaults.

    - ``offline=None`` (default): offline when no API key is available (see :func:`wandb_api_key_available`),
      online otherwise. An explicit ``$WANDB_MODE`` always wins. Offline runs are kept under
      ``<save_dir>/wandb/offline-run-*``; upload them later with ``wandb sync <that folder>``.
    - ``save_dir`` defaults to ``runs`` (next to the CSV/TensorBoard runs); the run folder (config, weights,
      results, checkpoints) is ``<save_dir>/<project>/<run id>``; W&B's own files are in ``<save_dir>/wandb``.
    - ``project`` defaults to ``$WANDB_PROJECT`` or ``prefalign``.

    The resolved config is sent as the W&B run config by the CLI; metrics are logged as usual; the confusion
    matrices, calibration curves and the mined-pairs grid are logged as images after each validation and test.
    ``log_model`` needs an online run; with ``offline=None`` and no key it is turned off with a warning.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = "runs",
        version: str | None = None,
        offline: bool | None = None,
        project: str | None = None,
        log_model: Literal["all"] | bool = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        job_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        auto = offline is None
        if auto:
            offline = not wandb_api_key_available()
        if offline and log_model and auto:
            rank_zero_warn(
                "W&B is offline (no API key), so model checkpoints cannot be uploaded: log_model is turned off."
            )
            log_model = False
        # From a config, jsonargparse fills every wandb.init argument behind **kwargs with None: drop those, so the
        # mode decided here is not shadowed by an explicit `mode: null`.
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        if offline and not os.environ.get("WANDB_MODE"):
            # Passed to wandb.init rather than set in os.environ (which is what Lightning does), so later runs
            # in the same process are not forced offline.
            kwargs.setdefault("mode", "offline")
        for key, value in (
            ("entity", entity),
            ("group", group),
            ("tags", tags),
            ("notes", notes),
            ("job_type", job_type),
        ):
            if value is not None:
                kwargs[key] = value
        super().__init__(
            name=name,
            save_dir=save_dir,
            version=version,
            offline=False,  # offline mode goes through `mode` above; Lightning's flag would set $WANDB_MODE
            project=project or os.environ.get("WANDB_PROJECT") or "prefalign",
            log_model=log_model,
            prefix=prefix,
            checkpoint_name=checkpoint_name,
            **kwargs,
        )
        # Not Lightning's `_offline`: that one makes `experiment` write WANDB_MODE=dryrun into os.environ, which
        # would override a user's WANDB_MODE (e.g. "disabled") and leak into every later run of the process.
        self.is_offline = bool(offline)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        created = self._experiment is None
        if created and self.save_dir:
            # Made only now, when the run starts: a config error caught before that leaves no folder behind
            # (wandb would fall back to a temporary folder if `dir` were missing).
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        run = _LightningWandbLogger.experiment.fget(self)
        if (
            created
            and run is not None
            and getattr(run, "settings", None) is not None
            and getattr(run.settings, "mode", "") in ("offline", "dryrun")
        ):
            folder = Path(run.dir).parent
            rank_zero_info(f"W&B is offline: the run is saved in {folder}. Upload it later with `wandb sync {folder}`.")
        return run


def run_dir(trainer: Any) -> Path:
    """The folder of this run, where ``config.yaml``, ``policy.pt`` and ``results_*.json`` are written.

    CSV/TensorBoard: their ``log_dir`` (``<save_dir>/<name>/version_<n>``). Other loggers (W&B): Lightning's
    checkpoint layout without the ``checkpoints`` part, ``<save_dir>/<name>/<version>`` (for W&B
    ``runs/<project>/<run id>``): ``trainer.log_dir`` would be the shared ``save_dir``, so every run would
    overwrite the previous one's files. No logger: ``default_root_dir``.

    A broadcast under DDP (only rank 0 knows the W&B run id): call it on every rank.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        path = trainer.default_root_dir
    elif isinstance(logger, (CSVLogger, TensorBoardLogger)):
        path = logger.log_dir
    else:
        if trainer.is_global_zero:
            _ = logger.experiment  # create the run (and its id) if nothing has been logged yet
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        path = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
    return Path(trainer.strategy.broadcast(str(path)))
