"""Shared by the multi-process Hugging Face tests: the tiny model and data, the CLI arguments, what a run logged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from prefalign.cli import main
from tests.conftest import CONFIGS
from tests.hf.tiny import distinct_rows, make_model_dir, write_jsonl

# 19 rows, 3 held out (val_fraction 0.15): 16 training rows are 2 steps per epoch of 2 ranks x 4 pairs, or of 1 x 8;
# 3 validation rows split 2 + 1 over DDP's ranks, so a mean of per-rank means would differ from the true mean.
ROWS, VAL_FRACTION, STEPS = 19, 0.15, 3
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def tiny_setup(tmp_path: Path) -> tuple[Path, Path]:
    """(model directory, data file) of the tiny local Llama and distinct TRL-format rows."""
    return make_model_dir(tmp_path / "model"), write_jsonl(distinct_rows(ROWS, seed=1), tmp_path / "prefs.jsonl")


def common_args(model_dir: Path, data_file: Path) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / "hf_dpo.yaml"),
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        str(data_file),
        f"--trainer.max_steps={STEPS}",  # across an epoch boundary: epoch 1 draws a new permutation
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0",
        f"--data.init_args.val_fraction={VAL_FRACTION}",
        "--model.optimizer.init_args.lr=0.001",
    ]


def single_process_run(model_dir: Path, data_file: Path, folder: Path, monkeypatch) -> Path:
    """The same recipe in this process, with the global batch of 2 ranks x 4 as one batch of 8; its run folder."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert main([*common_args(model_dir, data_file), "--data.init_args.batch_size=8"]) == 0
    return folder / "runs/hf_dpo/version_0"


def probes(folder: Path) -> list[dict]:
    return [json.loads((folder / f"probe/rank{r}.json").read_text()) for r in (0, 1)]


def train_losses(run: Path) -> list[float]:
    return [float(r["train/loss"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss")]


def val_metrics(run: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/loss")]
    assert len(rows) == 1  # one validation, at the end of epoch 0
    return {k: float(v) for k, v in rows[0].items() if k.startswith("val/") and v}
