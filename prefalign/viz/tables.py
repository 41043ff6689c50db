"""Tables (text samples, top-k token tables, per-class results) to whatever loggers the Trainer has.

W&B gets a ``wandb.Table``; a CSV file is written in the run's ``tables/`` folder in every case, so a table is
never lost to the logger choice and scripts can read it back without W&B.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence


def log_table(
    trainer: Any, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None
) -> list[str]:
    """Send a table to every W&B logger and write ``<run>/tables/<key>_step<step>.csv``; returns what was written.

    Rank zero only; the CSV goes through a temporary file and a rename, so readers never see half a table.
    """
    if not getattr(trainer, "is_global_zero", True):
        return []
    rows = [list(r) for r in rows]
    if any(len(r) != len(columns) for r in rows):
        raise ValueError(f"log_table({key!r}): every row needs {len(columns)} values ({', '.join(columns)}).")
    step = int(trainer.global_step) if step is None else int(step)
    written: list[str] = []
    loggers = list(getattr(trainer, "loggers", None) or [])
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":  # by name: wandb need not be importable for CSV runs
            logger.log_table(key=key, columns=list(columns), data=rows, step=step)
            written.append("WandbLogger")
    folder = (
        next((getattr(lg, "log_dir", None) for lg in loggers if getattr(lg, "log_dir", None)), None)
        or trainer.default_root_dir
    )
    path = Path(folder) / "tables" / f"{key.replace('/', '_')}_step{step}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(tmp, path)
    written.append(str(path))
    return written
