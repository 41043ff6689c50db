"""EpochProgress: the line it prints, from a trainer's state (no training needed)."""

import io
from types import SimpleNamespace

import torch

from prefalign.callbacks import EpochProgress


def _trainer(epoch, max_epochs, metrics, rank_zero=True):
    return SimpleNamespace(
        is_global_zero=rank_zero,
        sanity_checking=False,
        current_epoch=epoch,
        max_epochs=max_epochs,
        global_step=100 * (epoch + 1),
        callback_metrics=metrics,
    )


def test_one_line_per_epoch_with_metrics_elapsed_and_eta(monkeypatch):
    clock = iter([0.0, 30.0, 60.0])
    monkeypatch.setattr("prefalign.callbacks.progress.time.monotonic", lambda: next(clock))
    stream = io.StringIO()
    progress, module = EpochProgress(stream), SimpleNamespace(main_metric="val/acc_noisy")
    progress.on_train_start(_trainer(0, 4, {}), module)
    metrics = {"train/loss": torch.tensor(0.41234), "val/acc_noisy": torch.tensor(0.9213)}
    progress.on_train_epoch_end(_trainer(0, 4, metrics), module)  # 30 s for 1 of 4 epochs: 90 s to go
    progress.on_train_epoch_end(_trainer(3, 4, {"train/loss": torch.tensor(0.2)}), module)  # last epoch: no ETA
    assert stream.getvalue().splitlines() == [
        "epoch 1/4  step 100  train/loss 0.4123  val/acc_noisy 0.9213  elapsed 0m30s  eta 1m30s",
        "epoch 4/4  step 400  train/loss 0.2000  elapsed 1m00s",
    ]


def test_silent_off_rank_zero():
    stream = io.StringIO()
    progress = EpochProgress(stream)
    progress.on_train_start(_trainer(0, 2, {}, rank_zero=False), None)
    progress.on_train_epoch_end(_trainer(0, 2, {"train/loss": torch.tensor(1.0)}, rank_zero=False), None)
    assert stream.getvalue() == ""
