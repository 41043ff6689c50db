"""Run ``python -m prefalign`` in a subprocess the way a user would, with one torch thread per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # two cores shared by everyone: one intra-op thread per process
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONFAULTHANDLER="1",
    )
    env.update(extra)
    return env


def start_cli(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    log = open(cwd / "cli.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "prefalign", *map(str, args)],
        cwd=cwd,
        env=cli_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_cli(args: list[str], cwd: Path, timeout: float = 240, **env: str) -> tuple[int, str]:
    """Run to completion; returns (exit code, combined output). A hang is killed after ``timeout`` seconds."""
    proc = start_cli(args, cwd, **env)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"prefalign {' '.join(map(str, args))} did not finish in {timeout}s:\n{tail(cwd)}")
    return code, (cwd / "cli.log").read_text(errors="replace")


def tail(cwd: Path, lines: int = 60) -> str:
    return "\n".join((cwd / "cli.log").read_text(errors="replace").splitlines()[-lines:])
