"""What ``--ckpt_path last`` resumes: the newest ``last`` (or SLURM) checkpoint of any run of this experiment, else
the run's newest checkpoint."""

from __future__ import annotations

from pathlib import Path


def checkpoint_dirs(trainer) -> list[str]:
    """Glob patterns of the folders where this experiment's runs keep their checkpoints (Lightning's layout)."""
    patterns = []
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None):
            patterns.append(str(callback.dirpath))
    if len(patterns) < len(
        trainer.checkpoint_callbacks
    ):  # a ModelCheckpoint without dirpath: <save_dir>/<name>/<version>/checkpoints
        if trainer.loggers:
            logger = trainer.loggers[0]
            patterns.append(
                str(Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "") / "*" / "checkpoints")
            )
        else:
            patterns.append(str(Path(trainer.default_root_dir) / "checkpoints"))
    return patterns


def find_last_checkpoint(trainer) -> tuple[Path | None, bool]:
    """The checkpoint ``--ckpt_path last`` resumes, and whether it is a ``last`` one.

    The most recently written ``last*.ckpt`` of any run of this experiment, or SLURM ``hpc_ckpt_*.ckpt``; without
    those (a config whose ModelCheckpoint has no ``save_last``), the most recently written ``*.ckpt`` of the run,
    the higher step first on a tie."""
    import glob
    import re

    files = [Path(p) for pattern in checkpoint_dirs(trainer) for p in glob.glob(str(Path(pattern) / "*.ckpt"))]
    files = [p for p in files if p.is_file()]
    last = [p for p in files if re.fullmatch(r"last(-v?\d+)?", p.stem)]
    last += [
        p for p in Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt") if p.is_file()
    ]  # Lightning, on SLURM's SIGUSR1
    candidates = last or files
    if not candidates:
        return None, False

    def newest(p: Path) -> tuple[int, int]:
        step = re.search(r"step=(\d+)", p.stem)
        return p.stat().st_mtime_ns, int(step.group(1)) if step else -1

    return max(candidates, key=newest), bool(last)
