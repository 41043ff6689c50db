"""Test-only helpers loaded *by class path* inside CLI subprocesses (``PYTHONPATH`` holds the repo root).

- :class:`ProbedPreferenceDataModule` records every ``prepare_data`` and mining call as a marker file, so a
  test can count them across processes.
- :class:`DDPProbe` checks, inside every rank, that the policy is DDP-wrapped and the reference is not and
  never gets a gradient, and records what each rank trained and evaluated on.
- :class:`KillAtStep` SIGKILLs its own process after a given training step (mid-epoch), like a node failure.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning as L
import torch

from prefalign.checkpoint import load_weights
from prefalign.data import PreferenceDataModule

PROBE_DIR = Path("probe")


def _mark(name: str) -> None:
    PROBE_DIR.mkdir(exist_ok=True)
    (PROBE_DIR / f"{name}-pid{os.getpid()}").touch()


def _fingerprint(x: torch.Tensor) -> list[float]:
    """One number per image (a fixed random projection): equal images give equal numbers."""
    weights = torch.linspace(0.5, 1.5, x[0].numel(), dtype=torch.float64)
    return [round(float(v), 6) for v in (x.flatten(1).double() * weights).sum(1)]


class ProbedPreferenceDataModule(PreferenceDataModule):
    def prepare_data(self) -> None:
        _mark(f"prepare_data-rank{self.trainer.global_rank}")
        super().prepare_data()

    def _mine(self, reference_path: str, miner_path: str | None = None) -> dict[str, torch.Tensor]:
        _mark(f"mine-rank{self.trainer.global_rank}")
        return super()._mine(reference_path, miner_path)


class DDPProbe(L.Callback):
    def __init__(self) -> None:
        self.train_fingerprints: list[float] = []
        self.test_samples = 0
        self.facts: dict = {}

    def setup(self, trainer, pl_module, stage) -> None:
        # Count the samples behind each calibration curve (only rank zero plots; it must see every rank's samples).
        import prefalign.viz.figures as figures

        original = getattr(figures.calibration_figure, "__wrapped__", figures.calibration_figure)
        counts = self.facts.setdefault("calibration_samples", {})

        def recording(confidences, correct, *args, title="", **kwargs):
            counts[title] = len(confidences)
            return original(confidences, correct, *args, title=title, **kwargs)

        recording.__wrapped__ = original
        figures.calibration_figure = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.train_fingerprints += _fingerprint(batch["x"])

    def on_after_backward(self, trainer, pl_module) -> None:
        reference = pl_module._reference
        self.facts["reference_grads_after_backward"] = self.facts.get("reference_grads_after_backward", 0) + sum(
            p.grad is not None for p in reference.parameters()
        )

    def on_train_end(self, trainer, pl_module) -> None:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = trainer.strategy.model
        reference = pl_module._reference
        wrapped_ids = {id(p) for p in wrapped.parameters()}
        saved = load_weights(pl_module.reference_ckpt)["state_dict"]
        self.facts.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            policy_is_ddp_wrapped=isinstance(wrapped, DistributedDataParallel),
            reference_is_ddp=isinstance(reference, DistributedDataParallel),
            reference_params_in_ddp=sum(id(p) in wrapped_ids for p in reference.parameters()),
            reference_requires_grad=sum(p.requires_grad for p in reference.parameters()),
            reference_has_grad=sum(p.grad is not None for p in reference.parameters()),
            reference_equal_to_file=all(torch.equal(v, saved[k]) for k, v in reference.state_dict().items()),
            policy_equal_to_reference=all(
                torch.equal(v.cpu(), saved[k]) for k, v in pl_module.policy.state_dict().items()
            ),
            pairs=len(trainer.datamodule.pairs["x"]),
        )

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.test_samples += len(batch["y"])

    def on_test_end(self, trainer, pl_module) -> None:
        PROBE_DIR.mkdir(exist_ok=True)
        facts = {**self.facts, "test_samples": self.test_samples, "train_fingerprints": self.train_fingerprints}
        (PROBE_DIR / f"ddp-rank{trainer.global_rank}.json").write_text(json.dumps(facts))


class KillAtStep(L.Callback):
    """SIGKILL this process after training step ``step`` when ``$PREFALIGN_TEST_KILL`` is set (no cleanup runs)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if os.environ.get("PREFALIGN_TEST_KILL") and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
