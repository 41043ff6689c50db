"""Shared fixtures: small synthetic data and a tiny trained reference, so the fast suite never needs MNIST."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# Small enough for seconds-long runs, large enough that training visibly learns.
SYNTHETIC_ARGS = [
    "--data.init_args.source=synthetic",
    "--data.init_args.synthetic_size=[600, 200]",
    "--data.init_args.val_size=100",
    "--data.init_args.eval_batch_size=256",
]

# configs/seed_dpo.yaml's callbacks without NoValidationInFit, for tests of what validation logs.
SEED_DPO_VALIDATING = (
    '--trainer.callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
    '"init_args": {"save_last": true, "save_top_k": 0}}]'
)


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package), for tests of their functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Tiny models on a 2-core box: one intra-op thread is faster, and immune to the spin-wait slowdown that two
# OpenMP threads suffer when another process holds a core.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # Every CLI run logs to W&B beside CSV by default; tests turn that default off (each W&B run starts a service
    # process). The W&B tests delete this variable and read the offline run back.
    monkeypatch.setenv("PREFALIGN_WANDB", "0")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # main() turns known errors into a one-line message and an exit code; in tests they should raise, so a test
    # that ignores main()'s return value still fails loudly. The bad-input tests delete this variable.
    monkeypatch.setenv("PREFALIGN_DEBUG", "1")
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path_factory.getbasetemp() / "no-mnist-here"))
    torch.manual_seed(0)
    yield
    # wandb reads the environment once, into a process-wide singleton: tear it down after a test that used it,
    # so the next test's WANDB_* variables are the ones that count.
    wandb = sys.modules.get("wandb")
    if wandb is not None and hasattr(wandb, "teardown"):
        wandb.teardown()


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    """No API key anywhere and no WANDB_MODE: the logger has to decide on its own (offline, here)."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> Path:
    """A SeedCNN(channels=4) trained for a few steps on clean synthetic digits, saved as a weights file."""
    from prefalign.checkpoint import save_weights
    from prefalign.data.datamodules import NoisyMNISTDataModule
    from prefalign.models import SeedCNN

    torch.manual_seed(0)
    dm = NoisyMNISTDataModule(source="synthetic", synthetic_size=(600, 200), val_size=100, batch_size=64)
    dm.setup("fit")
    model = SeedCNN(channels=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for batch in dm.train_dataloader():
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("reference") / "seed_cnn_c4.pt"
    save_weights(model, path)
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder: runs/ and artifacts/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
