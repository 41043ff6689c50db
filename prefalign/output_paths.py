"""Every path a command will write, checked before any work: no silent overwrite of an input, no two outputs on one
path, no folder where a file goes, no folder that cannot be written.

A command names its outputs and inputs by the setting that chose them (``--out``, ``--ckpt``), so each refusal is
one line naming that setting and the fix. Nothing is created by the check (it probes writability with a temporary
file it removes), so a refused command leaves the disk as it found it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot or must not be written; the message names the setting and the fix."""


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also catches hard links and two spellings of one file
    return a.resolve() == b.resolve()


def _nearest_existing(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable_folder(folder: str | os.PathLike, setting: str) -> None:
    """``folder`` exists and can take a new file, or could be created where its nearest existing ancestor is."""
    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise OutputPathError(
            f"{setting}: {base} is a file, so the folder {folder} cannot be created there; choose another path."
        )
    try:
        # os.access alone is not enough: root passes it on read-only and virtual file systems (/proc).
        fd, probe = tempfile.mkstemp(dir=base, prefix=".prefalign-write-check.")
    except OSError as e:
        raise OutputPathError(
            f"{setting}: cannot write in {base} ({e.strerror or type(e).__name__}); choose a folder you can write to."
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(
    outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike | None] | None = None
) -> list[Path]:
    """Check the files a command will write (``{setting: path}``, e.g. ``{"--out": "o.jsonl", "--out (PNG grid)": "o.png"}``)
    against the files it reads (``{"--ckpt": "model.pt"}``); returns the output paths. Raises :class:`OutputPathError`."""
    paths = {setting: Path(path) for setting, path in outputs.items()}
    inputs = inputs or {}
    for setting, path in paths.items():
        if path.is_dir():
            raise OutputPathError(f"{setting} {path} is a folder; give the name of a file (inside it, if you like).")
        for in_setting, source in inputs.items():
            if source is not None and _same(path, Path(source)):
                raise OutputPathError(
                    f"{setting} {path} is the input {in_setting}: writing it would replace that file; choose another output name."
                )
    seen: dict[Path, str] = {}
    for setting, path in paths.items():
        key = path.resolve()
        if key in seen:
            raise OutputPathError(
                f"{seen[key]} and {setting} would both be written to {path}: one would overwrite the other; "
                "choose names that differ."
            )
        seen[key] = setting
    checked: set[Path] = set()
    for setting, path in paths.items():
        if path.parent.resolve() not in checked:
            check_writable_folder(path.parent, setting)
            checked.add(path.parent.resolve())
    return list(paths.values())


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it: readers never see half a file, and a failure
    leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any other written file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["OutputPathError", "check_outputs", "check_writable_folder", "write_text_atomically"]
