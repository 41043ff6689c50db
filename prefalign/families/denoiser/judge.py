"""Judges: frozen MNIST classifiers that score generated digits, p(c | x) for a sample conditioned on class c.

Diffusion-DPO needs two of them (different architecture and seed): the *mining* judge picks winners and losers
among the reference's samples, the *evaluation* judge scores the policy. A policy trained against one judge can
learn that judge's blind spots; scoring it with another keeps the reported gains honest.

A judge is trained once per (architecture, seed, data) with a short plain loop on the clean training images and
cached as a weights file under ``judge_dir``; its test accuracy is stored in the file's meta and checked on load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prefalign.checkpoint import load_weights, save_weights
from prefalign.digests import fingerprint
from prefalign.models.loading import build_model

log = logging.getLogger(__name__)

#: judge architectures by name (constructor keyword arguments are the defaults)
JUDGE_ARCHITECTURES = ("lenet", "seed_cnn")


def build_judge(arch: str) -> nn.Module:
    from prefalign.models import LeNet, SeedCNN

    builders = {"lenet": LeNet, "seed_cnn": SeedCNN}
    if arch not in builders:
        raise ValueError(f"unknown judge architecture {arch!r}; choose one of {', '.join(JUDGE_ARCHITECTURES)}.")
    return builders[arch]()


def judge_path(judge_dir: str | Path, arch: str, seed: int, data_key: dict[str, Any]) -> Path:
    """The cache file of a judge: one per architecture, seed and training data (a changed ingredient, a new file)."""
    return Path(judge_dir) / f"judge-{arch}-seed{seed}-{fingerprint(data_key)}.pt"


def train_judge(
    arch: str,
    seed: int,
    images: Tensor,
    labels: Tensor,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 4e-3,
    min_steps: int = 300,
) -> nn.Module:
    """A judge trained from scratch on ``images [N, 1, 28, 28]`` in [0, 1]: Adam with a one-cycle learning rate,
    cross-entropy, seeded shuffles (LeNet: about 0.992 clean MNIST test accuracy in 25 s on two CPU cores).

    Every batch is shifted by up to one pixel: generated digits are not centred exactly the way MNIST's are, and a
    judge that only knows centred digits rejects well-formed but shifted samples. A small data set (the synthetic
    stand-in) gets more epochs, so that the judge takes at least ``min_steps`` steps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_judge(arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(images) // batch_size)
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        shifts = torch.randint(-1, 2, (steps_per_epoch, 2), generator=gen).tolist()  # one host copy per epoch
        for (dy, dx), idx in zip(shifts, order.split(batch_size)):
            loss = F.cross_entropy(model(torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3))), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, chunk: int = 1000) -> float:
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(images.split(chunk), labels.split(chunk)))
    return correct / max(len(labels), 1)


def ensure_judge(
    arch: str, seed: int, datamodule: Any, judge_dir: str | Path = "artifacts/judges", min_accuracy: float = 0.0
) -> nn.Module:
    """The frozen judge for (``arch``, ``seed``) trained on ``datamodule``'s clean training images: loaded from
    ``judge_dir`` if cached, else trained and saved. ``datamodule`` is a set-up :class:`NoisyMNISTDataModule`.

    Raises ValueError when the judge's test accuracy is below ``min_accuracy``: scores from a weak judge mean little.

    Leaves torch's global random state as it found it, cached or not: building a cached judge's layers draws from it,
    and a run's training noise must not depend on whether ``judge_dir`` already held the file."""
    with torch.random.fork_rng(devices=[]):
        return _ensure_judge(arch, seed, datamodule, judge_dir, min_accuracy)


def _ensure_judge(arch: str, seed: int, datamodule: Any, judge_dir: str | Path, min_accuracy: float) -> nn.Module:
    key = {"arch": arch, "seed": seed, "data": datamodule.data_fingerprint(), "format": 1}
    path = judge_path(judge_dir, arch, seed, key)
    test = datamodule.splits["test"]
    if path.is_file():
        payload = load_weights(path)
        if payload["meta"].get("fingerprint") != fingerprint(key):
            raise ValueError(f"{path} is not the judge for {key}; delete it and it will be trained again.")
        model, acc = build_model(payload, f"judge {path}"), float(payload["meta"]["test_accuracy"])
    else:
        train = datamodule.splits["train"]
        log.info("training the %s judge (seed %d) on %d clean images ...", arch, seed, len(train["y"]))
        model = train_judge(arch, seed, train["x_clean"].cpu(), train["y"].cpu())
        acc = accuracy(model, test["x_clean"].cpu(), test["y"].cpu())
        save_weights(model, path, {"fingerprint": fingerprint(key), "test_accuracy": acc, "arch": arch, "seed": seed})
    if acc < min_accuracy:
        raise ValueError(
            f"the {arch} judge (seed {seed}, {path}) reaches only {acc:.4f} test accuracy, below the required {min_accuracy}; "
            "train it longer or lower the judge's min_accuracy."
        )
    return model.eval().requires_grad_(False)


class JudgeScores:
    """A judge's view of images: ``log_probs [N, C]`` and penultimate ``features [N, D]`` (the input of its last
    linear layer: the space FID and diversity are measured in)."""

    def __init__(self, log_probs: Tensor, features: Tensor) -> None:
        self.log_probs, self.features = log_probs, features

    def p_class(self, labels: Tensor) -> Tensor:
        """p(c | x) of each image's requested class ``c``."""
        return self.log_probs.gather(1, labels.unsqueeze(1)).squeeze(1).exp()

    def correct(self, labels: Tensor) -> Tensor:
        return self.log_probs.argmax(1) == labels


@torch.no_grad()
def judge_scores(judge: nn.Module, images01: Tensor, chunk: int = 500) -> JudgeScores:
    """Score ``images01 [N, 1, 28, 28]`` (in [0, 1]) with ``judge``, in chunks; fp32 whatever the autocast state."""
    last = [m for m in judge.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[Tensor] = []
    hook = last.register_forward_hook(lambda module, args, out: captured.append(args[0].float()))
    try:
        with torch.autocast(images01.device.type, enabled=False):
            logits = torch.cat([judge(part.float()).float() for part in images01.split(chunk)])
    finally:
        hook.remove()
    return JudgeScores(F.log_softmax(logits, dim=1), torch.cat(captured).flatten(1))


__all__ = [
    "JUDGE_ARCHITECTURES",
    "build_judge",
    "judge_path",
    "train_judge",
    "ensure_judge",
    "accuracy",
    "JudgeScores",
    "judge_scores",
]
