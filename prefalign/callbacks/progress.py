"""One progress line per epoch for runs nobody watches on a terminal (CI, nohup, SLURM logs)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from lightning.pytorch.callbacks import Callback


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class EpochProgress(Callback):
    """Prints ``epoch 3/5  step 2580  train/loss 0.412  val/acc_noisy 0.9213  elapsed 1m42s  eta 1m08s`` after each
    training epoch (after its validation, so the validation metric is the epoch's own).

    The validation metric is the module's ``main_metric`` (the model family's, e.g. ``val/acc_noisy`` or
    ``val/loss``), omitted when the run has not logged it. The ETA assumes the remaining epochs take the mean
    time of the finished ones. Rank zero only. The CLI installs it whenever the progress bar is off.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._start: float | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or self._start is None or trainer.sanity_checking:
            return
        done = trainer.current_epoch + 1
        elapsed = time.monotonic() - self._start
        parts = [
            f"epoch {done}/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else f"epoch {done}",
            f"step {trainer.global_step}",
        ]
        metrics = trainer.callback_metrics
        for key in ("train/loss", getattr(pl_module, "main_metric", None)):
            if key and key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4f}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if trainer.max_epochs and trainer.max_epochs > done:
            parts.append(f"eta {_duration(elapsed / done * (trainer.max_epochs - done))}")
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
