"""Checks before any work: the paths a run will write, and the config files it reads.

A run writes its reference (when it trains one), its exported weights, its caches (mined pairs, judges) and its run
folder. A path that cannot be written used to fail only when the run got there: after the reference was trained or
the pairs mined, with an error naming an internal temporary file. Each check here tries a real write (and removes
it): permission bits say nothing for root, a read-only mount or a folder under ``/proc``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class RunPathError(ValueError):
    """A path the run would write cannot be written; the message names the setting and the fix."""


def unwritable_reason(folder: str | Path) -> str | None:
    """Why files cannot be created in ``folder`` (made if missing), or ``None`` when they can. Leaves nothing behind."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folders below it would be made by the run: they need this one writable
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".prefalign-write-check-")
    except OSError as e:
        return f"cannot create files in {existing} ({e.strerror or type(e).__name__})"
    os.close(handle)
    os.unlink(probe)
    return None


def check_folder(setting: str, folder: str | Path | None) -> None:
    """Refuse a folder the run would write into (a cache, the run folder) that cannot be written."""
    if folder is None or str(folder) == "":
        return
    reason = unwritable_reason(folder)
    if reason is not None:
        raise RunPathError(f"{setting}={folder} cannot be written: {reason}. Set {setting} to a writable folder.")


def check_file(setting: str, path: str | Path | None, will_write: bool = True) -> None:
    """Refuse a weights-file path that is a folder, or (when the run writes it) whose folder cannot be written."""
    if path is None or str(path) == "":
        return
    if Path(path).is_dir():
        raise RunPathError(f"{setting}={path} is a folder; give a file path such as {Path(path) / 'weights.pt'}.")
    if will_write:
        reason = unwritable_reason(Path(path).parent)
        if reason is not None:
            raise RunPathError(
                f"{setting}={path} cannot be written: {reason}. Set {setting} to a file in a writable folder."
            )


def check_config_files(words: list[str]) -> None:
    """Refuse a ``--config`` file that is not YAML, naming the file and the line (jsonargparse names neither)."""
    import yaml

    for i, word in enumerate(words):
        if word == "--config" and i + 1 < len(words):
            path = words[i + 1]
        elif word.startswith("--config="):
            path = word.split("=", 1)[1]
        else:
            continue
        if not Path(path).is_file():
            continue  # jsonargparse reports a missing file, or reads a YAML string given in place of one
        try:
            yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"--config {path} is not a text file; give a YAML config.") from None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
            raise ValueError(f"--config {path} is not valid YAML: {e.problem or e.context} at {where}.") from e
        except yaml.YAMLError as e:
            raise ValueError(f"--config {path} is not valid YAML: {' '.join(str(e).split())}.") from e
