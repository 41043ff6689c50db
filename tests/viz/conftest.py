"""A tiny SeedCNN trained once per session on synthetic 10-class data, shared by the viz tests."""

import pytest
import torch
from torch.nn import functional as F

from prefalign.models import SeedCNN


def synthetic_digits(n: int, gen: torch.Generator, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k = fixed random pattern k plus pixel noise, clamped to [0, 1]."""
    y = torch.randint(0, len(patterns), (n,), generator=gen)
    x = (patterns[y] + 0.2 * torch.randn(n, 1, 28, 28, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core box: intra-op threads only add contention (measured 50x slower with 2)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def trained_cnn() -> SeedCNN:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixture: set up before the module-scoped one_torch_thread
    try:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        patterns = (torch.rand(10, 1, 28, 28, generator=gen) > 0.7).float()
        model = SeedCNN(channels=8)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(60):
            x, y = synthetic_digits(64, gen, patterns)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, y = synthetic_digits(500, gen, patterns)
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean()
        assert acc > 0.95, f"fixture model did not fit the synthetic data (acc {acc:.2f})"
    finally:
        torch.set_num_threads(previous)
    return model.eval()


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B fully offline and quiet, writing under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    return tmp_path
