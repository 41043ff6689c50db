"""The fast path changes the speed, never what is learned (beyond fp noise), and keeps the hot loop free of host syncs.

- bf16-mixed vs fp32: a few DPO steps give close losses and parameter updates (loose bf16 tolerance).
- ``model.compile`` vs eager: the same training within fp tolerance (slow: inductor compiles C++ on first use).
- Chunked evaluation/mining forwards (CPU) vs one call: the same log-probs.
- Logging only on the steps the loggers write: the loggers still get every train metric at those steps, and
  between them a training step does no ``.item()``/``bool()`` on a tensor (no host-device sync).
Cached vs recomputed reference log-probs: ``tests/core/test_module.py::test_cached_and_recomputed_reference_give_the_same_training``.
"""

from __future__ import annotations

import csv
import sys

import lightning as L
import pytest
import torch

from prefalign.core.module import AlignmentModule
from prefalign.data import PreferenceDataModule
from prefalign.data.batches import CPU_FORWARD_CHUNK, chunked_forward
from prefalign.data.mining import reference_log_probs
from prefalign.models import SeedCNN
from prefalign.objectives import DPO


def _dpo_run(
    tiny_reference,
    tmp_path,
    *,
    steps=6,
    precision="32-true",
    compile=False,
    callbacks=(),
    record_losses=True,
    **trainer_kw,
):
    """A few DPO steps on synthetic hard-negative pairs; returns (module, per-step losses)."""
    L.seed_everything(0)
    model = AlignmentModule(
        backbone=SeedCNN(channels=4),
        objective=DPO(beta=0.1),
        reference_ckpt=str(tiny_reference),
        log_figures=False,
        compile=compile,
    )
    dm = PreferenceDataModule(
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        eval_batch_size=256,
        strategy="hard_negative",
        cache_dir=str(tmp_path / "pairs"),
    )
    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    kw = dict(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        precision=precision,
        callbacks=([Losses()] if record_losses else []) + list(callbacks),
    )
    kw.update(trainer_kw)
    trainer = L.Trainer(**kw)
    trainer.fit(model, dm)
    return model, torch.tensor(losses)


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in module.parameters()])


def _updates(model, tiny_reference) -> torch.Tensor:
    from prefalign.models.loading import load_model

    return _flat(model.policy) - _flat(load_model(str(tiny_reference)))


def test_bf16_mixed_trains_like_fp32(tiny_reference, tmp_path):
    fp32, loss32 = _dpo_run(tiny_reference, tmp_path / "fp32")
    bf16, loss16 = _dpo_run(tiny_reference, tmp_path / "bf16", precision="bf16-mixed")
    # bf16 keeps ~3 significant digits: losses agree to ~1%, and the parameter updates point the same way.
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=2e-3)
    u32, u16 = _updates(fp32, tiny_reference), _updates(bf16, tiny_reference)
    assert u32.norm() > 0
    assert torch.nn.functional.cosine_similarity(u32, u16, dim=0) > 0.95
    assert (u16 - u32).norm() / u32.norm() < 0.3
    # Weights and optimizer state stay fp32 under bf16-mixed.
    assert all(p.dtype == torch.float32 for p in bf16.policy.parameters())


@pytest.mark.slow  # inductor compiles C++ on first use: tens of seconds on 2 cores
def test_compile_trains_like_eager(tiny_reference, tmp_path):
    eager, loss_e = _dpo_run(tiny_reference, tmp_path / "eager")
    compiled, loss_c = _dpo_run(tiny_reference, tmp_path / "compiled", compile=True)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    # Adam divides by sqrt(v): a 1e-7 gradient difference on a near-zero gradient moves a weight by up to ~lr*1e-2.
    torch.testing.assert_close(_flat(compiled.policy), _flat(eager.policy), rtol=1e-3, atol=1e-4)


def test_chunked_forward_equals_one_call():
    torch.manual_seed(0)
    model = SeedCNN(channels=4).eval()
    x = torch.rand(3 * CPU_FORWARD_CHUNK + 5, 1, 28, 28)
    with torch.no_grad():
        whole = torch.log_softmax(model(x), dim=1)
        calls = []
        chunked = chunked_forward(
            lambda part: calls.append(len(part)) or torch.log_softmax(model(part), dim=1), x, max_batch=1000
        )
    assert max(calls) == CPU_FORWARD_CHUNK and sum(calls) == len(x)  # capped on CPU
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reference_log_probs(model, x, batch_size=1000), whole, rtol=1e-5, atol=1e-6)
    assert chunked_forward(lambda part: part * 2, x[:10], max_batch=4).shape == x[:10].shape


class _SyncCounter(L.Callback):
    """Counts tensor→Python conversions (each one is a host-device sync on an accelerator) per training batch,
    from one batch's start to the next one's, which covers Lightning's own per-batch bookkeeping too.

    Calls made by ``torch.optim`` itself are not counted: Adam reads its step counter, a CPU tensor, with
    ``.item()`` (no device sync on any device)."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.per_batch: list[int] = []
        self.where: list[str] = []
        self._count = None
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counting(t, *a, __original=original, **k):
                if self._count is not None and "torch/optim/" not in sys._getframe(1).f_code.co_filename.replace(
                    "\\", "/"
                ):
                    self._count += 1
                    self.where.append(f"{sys._getframe(1).f_code.co_filename}:{sys._getframe(1).f_lineno}")
                return __original(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counting)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._count is not None:
            self.per_batch.append(self._count)
        self._count = 0

    def on_train_end(self, trainer, pl_module):
        self._count = None


def test_no_host_sync_per_training_step(tiny_reference, tmp_path, monkeypatch):
    counter = _SyncCounter(monkeypatch)
    # Default path: nan_policy=raise (checked only on logging steps), no progress bar, a real logger that writes
    # every 1000 steps; 6 steps of an 8-batch epoch, so no logging step and no epoch end fall inside.
    model, _ = _dpo_run(
        tiny_reference,
        tmp_path,
        steps=6,
        callbacks=[counter],
        log_every_n_steps=1000,
        record_losses=False,
        logger=L.pytorch.loggers.CSVLogger(tmp_path / "logs"),
    )
    assert model.nan_policy == "raise"
    assert len(counter.per_batch) == 5
    assert counter.per_batch == [0] * 5, (
        f"tensor->Python conversions per training step: {counter.per_batch} at {counter.where[:5]}"
    )


def test_loggers_still_get_every_train_metric_on_logging_steps(tiny_reference, tmp_path):
    logger = L.pytorch.loggers.CSVLogger(tmp_path / "logs")
    _dpo_run(tiny_reference, tmp_path, steps=6, log_every_n_steps=2, logger=logger)
    logger.save()
    with open(logger.experiment.metrics_file_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [1, 3, 5]
    for key in (
        "train/loss",
        "train/kl_ref",
        "train/rewards/margins",
        "train/rewards/accuracies",
        "train/logps/chosen",
    ):
        assert all(r[key] != "" for r in rows), key


def test_progress_bar_still_shows_the_loss(tiny_reference, tmp_path):
    model, _ = _dpo_run(tiny_reference, tmp_path, steps=3, enable_progress_bar=True)
    assert "train/loss" in model.trainer.progress_bar_metrics
