"""The offline recipe end to end, as a user runs it: one process from a folder with no artifacts (about 13 minutes on
2 CPU cores). What the issue asks of it: the valid-word rate of samples improves on the pretrained model's, the
validation loss stays within +5% of it. The issue's 20-minute budget is a measurement, not a test assertion: it is
timed by scripts/hf_recipe_results.py, which reports it against the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import CONFIGS, REPO


@pytest.mark.slow
def test_offline_recipe_from_a_clean_folder_improves_within_the_loss_budget(tmp_path):
    (tmp_path / "configs").symlink_to(CONFIGS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFALIGN_WANDB": "0", "PYTHONPATH": str(REPO)}
    env.pop("PREFALIGN_DEBUG", None)
    subprocess.run(
        [sys.executable, "-m", "prefalign", "fit", "--config", "configs/hf_shakespeare_dpo.yaml"],
        cwd=tmp_path,
        env=env,
        check=True,
    )
    results = json.loads((tmp_path / "runs/hf_shakespeare_dpo/version_0/results_test.json").read_text())
    m = results["metrics"]
    assert (tmp_path / "artifacts/reference/hf_shakespeare_llama/config.json").is_file()
    assert m["test/valid_words"] > m["test/reference/valid_words"], m
    assert m["test/loss"] <= 1.05 * m["test/reference/loss"], m
