"""One way to get a matplotlib figure out of a run, whatever logger the Trainer has.

W&B and TensorBoard get the figure natively; every other logger (CSV, none) gets a PNG next to its logs,
so a plot is never silently dropped because of the logger choice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as an image (format from the suffix, PNG by default) to ``path`` and return it.

    Writes to a temporary file in the same folder first and renames it, so a reader (a dashboard, another
    rank, a test) never sees a half-written image.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".") or "png"
    # Agg canvas attached explicitly: saving never depends on the interactive backend or a display.
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    # A per-process temporary name opened normally (not mkstemp), so the final file gets the usual umask
    # permissions rather than 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, format=fmt, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def close_figure(fig: Figure) -> None:
    """Release a figure: figures made with pyplot stay alive in its registry until closed."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend at import (Agg when there is no display)

    plt.close(fig)


def _png_dir(trainer: Any, logger: Any | None) -> Path:
    log_dir = getattr(logger, "log_dir", None) if logger is not None else None
    return Path(log_dir or trainer.default_root_dir) / "images"


def log_figure(trainer: Any, key: str, fig: Figure, step: int | None = None) -> list[str]:
    """Send ``fig`` to every logger of a Lightning ``trainer`` and close it.

    - ``WandbLogger``: ``logger.log_image(key, [fig], step)`` (stored under ``media/images`` of the run);
    - ``TensorBoardLogger``: ``experiment.add_figure(key, fig, global_step=step)``;
    - any other logger, or no logger: a PNG ``<log_dir or default_root_dir>/images/<key>_step<step>.png``
      with ``/`` in the key replaced by ``_``.

    ``step`` defaults to ``trainer.global_step``. Only global rank zero logs. Returns what was written or sent
    (file paths for PNGs, logger class names otherwise), mostly so tests can check it.
    """
    written: list[str] = []
    try:
        if not getattr(trainer, "is_global_zero", True):
            return written
        step = int(trainer.global_step) if step is None else int(step)
        loggers = list(getattr(trainer, "loggers", None) or [])
        png_dirs: list[Path] = []
        for logger in loggers:
            name = type(logger).__name__
            # Compared by class name so neither wandb nor tensorboard has to be importable for CSV runs.
            if name == "WandbLogger":
                logger.log_image(key=key, images=[fig], step=step)
                written.append(name)
            elif name == "TensorBoardLogger":
                logger.experiment.add_figure(key, fig, global_step=step, close=False)
                written.append(name)
            else:
                png_dirs.append(_png_dir(trainer, logger))
        if not loggers:
            png_dirs.append(_png_dir(trainer, None))
        filename = f"{key.replace('/', '_')}_step{step}.png"
        for folder in dict.fromkeys(png_dirs):  # two loggers sharing a folder get one file
            written.append(str(save_figure(fig, folder / filename)))
        return written
    finally:
        close_figure(fig)
