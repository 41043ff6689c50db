"""Figure builders return Figures; FilterPlot/ParameterCount work inside a real (tiny) fit."""

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from matplotlib.figure import Figure
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from prefalign.models import MLP, BinaryCNN
from prefalign.viz.callbacks import FilterPlot, ParameterCount, parameter_table
from prefalign.viz.figures import (
    calibration_bins,
    calibration_figure,
    confusion_matrix_figure,
    filters_figure,
    image_grid_figure,
    pairs_grid_figure,
)
from prefalign.viz.images import save_figure


def test_figures_build(tmp_path):
    gen = torch.Generator().manual_seed(0)
    figs = [
        confusion_matrix_figure(torch.randint(0, 50, (10, 10), generator=gen), title="cm"),
        confusion_matrix_figure(torch.zeros(2, 2, dtype=torch.long)),  # empty rows must not divide by zero
        calibration_figure(torch.rand(200, generator=gen), torch.rand(200, generator=gen) > 0.3, n_bins=10),
        pairs_grid_figure(torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,)), torch.randint(0, 10, (40,))),
        filters_figure(torch.randn(8, 1, 3, 3)),
        filters_figure(torch.randn(6, 3, 5, 5), max_filters=12),  # multi-channel, capped, no value labels
        image_grid_figure(torch.rand(5, 1, 28, 28), [f"#{i}" for i in range(5)], ncols=3),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    for i, fig in enumerate(figs):  # actually render: layout problems only show at draw time
        save_figure(fig, tmp_path / f"{i}.png")
    pairs = figs[3]
    # One mosaic axes: 32 tiles, each titled "✓<chosen> ✗<rejected>" above it.
    (ax,) = pairs.axes
    titles = [t.get_text() for t in ax.texts]
    assert len(titles) == 32 and all(t.startswith("✓") and "✗" in t for t in titles)
    tiles = ax.images[0].get_array()
    assert tiles.mask.any() and (~tiles.mask).sum() == 32 * 28 * 28  # the gaps are masked (white), the tiles are not


def test_calibration_bins_ece():
    conf = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = torch.tensor([1, 1, 1, 0, 1, 0])
    count, mean_conf, acc, ece = calibration_bins(conf, correct, n_bins=10)
    assert count.sum() == 6 and count[9] == 4 and count[5] == 2
    assert ece == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.05)
    with pytest.raises(ValueError):
        calibration_bins(conf, correct[:3])


class TinyPolicyModule(L.LightningModule):
    """BoringModel-like: the aligned network lives in `.policy`, as in prefalign's objectives."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.policy(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path, policy, callbacks):
    data = TensorDataset(torch.rand(16, 1, 28, 28), torch.randint(0, 2, (16,)))
    trainer = L.Trainer(
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(TinyPolicyModule(policy), DataLoader(data, batch_size=8))
    return trainer


def test_filter_plot_and_parameter_count_in_a_fit(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        fit(tmp_path, BinaryCNN(), [FilterPlot(every_n_epochs=1), ParameterCount()])
    pngs = sorted(p.name for p in tmp_path.rglob("filters_first_conv_*.png"))
    assert pngs == ["filters_first_conv_step2.png", "filters_first_conv_step4.png"]  # epoch 1 (=fit end overwrite), 2
    assert "conv1.weight" in caplog.text and "8×1×3×3" in caplog.text and "BinaryCNN: 338 parameters" in caplog.text


def test_filter_plot_skips_models_without_conv(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        fit(tmp_path, MLP(hidden=(16,), num_classes=2), [FilterPlot()])
    assert not list(tmp_path.rglob("filters_*.png"))
    assert "no Conv2d" in caplog.text


def test_parameter_table_marks_frozen():
    model = BinaryCNN()
    model.fc.requires_grad_(False)
    table = parameter_table(model)
    assert "fc.weight" in table and " no" in table and "(80 trainable)" in table
