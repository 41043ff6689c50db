"""log_figure: W&B, TensorBoard, and the PNG fallback for every other logger (or none)."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.figure import Figure

from prefalign.viz.figures import image_grid_figure
from prefalign.viz.images import log_figure, save_figure


def small_figure() -> Figure:
    return image_grid_figure(torch.rand(2, 1, 28, 28), ["a", "b"], ncols=2)


def trainer_with(logger, tmp_path) -> L.Trainer:
    return L.Trainer(
        logger=logger,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )


def test_save_figure_is_atomic(tmp_path):
    path = save_figure(small_figure(), tmp_path / "sub" / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["fig.png"]


def test_csv_logger_gets_a_png_in_its_log_dir(tmp_path):
    logger = CSVLogger(tmp_path / "logs")
    written = log_figure(trainer_with(logger, tmp_path), "eval/confusion", small_figure(), step=7)
    expected = tmp_path / "logs" / "lightning_logs" / "version_0" / "images" / "eval_confusion_step7.png"
    assert written == [str(expected)] and expected.is_file()


def test_no_logger_png_in_default_root_dir(tmp_path):
    written = log_figure(trainer_with(False, tmp_path), "filters/first_conv", small_figure())
    assert written == [str(tmp_path / "images" / "filters_first_conv_step0.png")]


def test_only_rank_zero_logs(tmp_path):
    fake = SimpleNamespace(is_global_zero=False, loggers=[], default_root_dir=str(tmp_path), global_step=0)
    assert log_figure(fake, "x", small_figure()) == []
    assert not (tmp_path / "images").exists()


def test_tensorboard_event_file_has_the_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    csv = CSVLogger(tmp_path / "csv")
    written = log_figure(trainer_with([logger, csv], tmp_path), "dreams/grid", small_figure(), step=3)
    assert written[0] == "TensorBoardLogger" and written[1].endswith("dreams_grid_step3.png")
    logger.experiment.flush()
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert "dreams/grid" in acc.Tags()["images"]
    assert acc.Images("dreams/grid")[0].step == 3


def test_wandb_offline_run_has_the_media(tmp_path, offline_wandb):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="prefalign-test")
    try:
        written = log_figure(trainer_with(logger, tmp_path), "filters/first_conv", small_figure(), step=2)
    finally:
        wandb.finish()
    assert written == ["WandbLogger"]
    media = list(tmp_path.rglob("media/images/**/*.png"))  # "/" in the key becomes a sub-folder
    assert media and any("first_conv" in p.name for p in media), list(tmp_path.rglob("*"))
