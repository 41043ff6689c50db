"""The seed-004 1-vs-8 filter study as a recipe: configs/binary_1v8.yaml through the CLI.

Fast: one epoch on synthetic digits prints the parameter table, writes the filter plot and exports weights that
``prefalign dream`` can read. Slow: the real recipe on real MNIST reaches >= 0.95 clean test accuracy.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import yaml

from prefalign.cli import main
from prefalign.data.mnist import default_root
from tests.conftest import CONFIGS, SYNTHETIC_ARGS

CONFIG = CONFIGS / "binary_1v8.yaml"
# Read at import, before the autouse fixture points $PREFALIGN_DATA_DIR at an empty folder for the fast suite.
REAL_MNIST_DIR = default_root()

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# Synthetic data has ~60 training images per class: hold out 20 of each for test and 20 images for validation.
SMALL_SUBSET = ["--data.init_args.holdout_per_class=20", "--data.init_args.val_size=20"]


def test_config_is_the_seed_004_setup(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIG), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["backbone"] == {
        "class_path": "prefalign.models.BinaryCNN",
        "init_args": {"filters": 8, "num_classes": 2},
    }
    assert cfg["model"]["family"] is None  # the classifier family, its class count read from the data (2 digits)
    assert cfg["model"]["objective"]["class_path"] == "prefalign.objectives.SFT"
    assert cfg["model"]["export_path"] == "artifacts/reference/binary_1v8.pt"
    assert cfg["model"]["optimizer"]["init_args"]["lr"] == 0.001 and cfg["trainer"]["max_epochs"] == 10
    data = cfg["data"]["init_args"]
    assert data["digits"] == [8, 1] and data["holdout_per_class"] == 1000
    assert data["train_on"] == "clean" and data["batch_size"] == 64
    callbacks = [c["class_path"] for c in cfg["trainer"]["callbacks"]]
    assert "prefalign.viz.callbacks.ParameterCount" in callbacks and "prefalign.viz.callbacks.FilterPlot" in callbacks
    assert cfg["trainer"]["logger"]["init_args"]["name"] == "binary_1v8"


def test_one_epoch_prints_parameters_plots_filters_and_exports_dreamable_weights(in_tmp, caplog, capsys):
    with caplog.at_level(logging.INFO):
        main(
            [
                "fit",
                "--config",
                str(CONFIG),
                *SYNTHETIC_ARGS,
                *SMALL_SUBSET,
                *QUIET,
                "--trainer.max_epochs=1",
                "--model.log_figures=false",
            ]
        )
    # ParameterCount: the notebook's per-layer printout, at fit start.
    for line in ("conv1.weight", "8×1×3×3", "fc.weight", "2×128", "BinaryCNN: 338 parameters"):
        assert line in caplog.text
    run = in_tmp / "runs/binary_1v8/version_0"
    # FilterPlot: the learned 3×3 filters, once, at the end of fit (CSV logger → PNG in the run's images folder).
    filters = sorted((run / "images").glob("filters_first_conv_step*.png"))
    assert len(filters) == 1 and filters[0].stat().st_size > 1000
    results = json.loads((run / "results_test.json").read_text())
    assert 0.0 <= results["metrics"]["test/acc_clean"] <= 1.0
    out = capsys.readouterr().out
    assert "test results (SFT)" in out

    # The exported weights are a prefalign weights file that the dream command reads: two classes, two dreams.
    ckpt = in_tmp / "artifacts/reference/binary_1v8.pt"
    assert ckpt.is_file()
    assert main(["dream", "--ckpt", str(ckpt), "--out_dir", "dreams", "--steps", "5", "--gif_frames", "3"]) == 0
    assert "1: " in capsys.readouterr().out
    assert (in_tmp / "dreams/dream_grid.png").is_file()


@pytest.mark.slow
def test_binary_recipe_reaches_95_percent_on_real_mnist(in_tmp, monkeypatch, caplog):
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(REAL_MNIST_DIR))
    start = time.perf_counter()
    with caplog.at_level(logging.INFO):
        main(["fit", "--config", str(CONFIG), *QUIET])
    elapsed = time.perf_counter() - start
    run = in_tmp / "runs/binary_1v8/version_0"
    metrics = json.loads((run / "results_test.json").read_text())["metrics"]
    print(f"binary_1v8 on real MNIST: test/acc_clean {metrics['test/acc_clean']:.4f} in {elapsed:.0f} s")
    assert metrics["test/acc_clean"] >= 0.95
    assert "BinaryCNN: 338 parameters" in caplog.text
    assert len(list((run / "images").glob("filters_first_conv_step*.png"))) == 1
    assert (in_tmp / "artifacts/reference/binary_1v8.pt").is_file()
