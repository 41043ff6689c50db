"""A tiny synthetic stand-in for MNIST (same shapes and dtypes), for tests and smoke runs without the download."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def synthetic_digits(
    n_train: int = 2000, n_test: int = 500, seed: int = 0, num_classes: int = 10
) -> dict[str, torch.Tensor]:
    """Ten smooth random stroke patterns, shifted by up to ±2 pixels and rescaled per sample.

    Returns the same dict as :func:`prefalign.data.mnist.load_mnist`: uint8 images ``[N, 28, 28]`` and int64 labels.
    A linear model separates the classes when clean; Gaussian noise at factor 0.5 makes them genuinely hard.
    """
    g = torch.Generator().manual_seed(seed)
    blur = torch.exp(-(torch.arange(-3, 4).float() ** 2) / 4.0)
    kernel = (blur[:, None] * blur[None, :]).div(blur.sum() ** 2)[None, None]
    raw = torch.rand(num_classes, 1, 28, 28, generator=g)
    protos = F.conv2d(raw, kernel, padding=3)
    protos = (protos > protos.flatten(1).quantile(0.8, dim=1)[:, None, None, None]).float()
    protos[..., :3, :] = 0
    protos[..., -3:, :] = 0
    protos[..., :, :3] = 0
    protos[..., :, -3:] = 0

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        images = protos[labels, 0]
        # Vectorised integer shifts: roll every row by its own offset via gather on a padded grid.
        rows = (torch.arange(28)[None, :] - shifts[:, :1]).clamp(0, 27)
        cols = (torch.arange(28)[None, :] - shifts[:, 1:]).clamp(0, 27)
        images = images[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        scale = 0.7 + 0.3 * torch.rand(n, 1, 1, generator=g)
        images = (images * scale + 0.05 * torch.rand(n, 28, 28, generator=g)).clamp(0, 1)
        return (images * 255).round().to(torch.uint8), labels.to(torch.int64)

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
