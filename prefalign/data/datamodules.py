"""NoisyMNISTDataModule: noisy MNIST (clean + noisy views of every split); the preference pairs are in preference_datamodule.py.

Everything lives in memory as tensors (MNIST is 47 MB as uint8) and batches are index slices
(:class:`~prefalign.data.batches.TensorBatches`). When the trainer runs on a GPU the tensors are moved to
it once, so batches never touch the host.
"""

from __future__ import annotations

import json
from typing import Literal

import lightning as L
import torch
from jsonargparse import lazy_instance

from prefalign.data.batches import TensorBatches
from prefalign.data.corruptions import Corruption, GaussianNoise
from prefalign.validation import check_in_range

# Test images are keyed apart from training images so image i of each split gets different noise.
TEST_INDEX_OFFSET = 1_000_000

# The splits most recently built in this process, by what determines them. A pipeline builds the same splits twice
# (the reference recipe's fit, then the alignment fit's): loading, MD5-checking and corrupting MNIST again took ~1.6 s.
# Nothing writes into split tensors (batches are gathered copies, re-drawn noise is a new tensor), so sharing is safe.
# One entry: the memory held is that of one data module.
_last_splits: tuple[tuple, dict[str, dict[str, torch.Tensor]]] | None = None


class NoisyMNISTDataModule(L.LightningDataModule):
    """MNIST with a clean and a corrupted view of every split.

    Splits: train and validation (``val_size`` images held out of the 60k training set by a seeded
    permutation) and the 10k test set. Every evaluation batch holds both views: ``x_clean``, ``x_noisy``, ``y``.
    Training batches hold ``x`` and ``y`` from the view chosen by ``train_on``.

    Args:
        data_dir: MNIST cache folder (default: ``$PREFALIGN_DATA_DIR`` or ``~/.cache/prefalign/mnist``).
        source: ``mnist`` (the real data, fetched and MD5-verified) or ``synthetic`` (a small generated
            stand-in with the same shapes, for tests and smoke runs; sizes from ``synthetic_size``).
        batch_size: training batch size.
        eval_batch_size: validation/test/mining batch size (no gradients, so larger is faster).
        val_size: training images held out for validation; default 5000 for MNIST, a fifth of the training
            set for the synthetic stand-in (so ``source: synthetic`` works without touching it).
        split_seed: seed of the train/validation split and of the shuffling.
        corruption: how the noisy view is made (default: the DPO-on-noisy-MNIST notebook's, Gaussian noise ×0.5, clipped).
        train_on: which view SFT trains on: ``clean`` (the reference recipe), ``noisy``, or ``both``.
        digits: keep only these digits, relabelled 0..k-1 in the given order (e.g. ``[8, 1]`` for the
            seed-004 1-vs-8 study: 8→0, 1→1). The test set is then the first ``holdout_per_class`` images of
            each digit from the training file, as in the seed.
        holdout_per_class: test images per digit when ``digits`` is set.
        synthetic_size: (train, test) sizes for ``source: synthetic``.
        resample_noise: re-draw the training images' noise every epoch (stream = epoch; epoch 0 is the
            fixed noise): augmentation against memorising one noise draw. Validation and test noise never change.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        source: Literal["mnist", "synthetic"] = "mnist",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        split_seed: int = 0,
        corruption: Corruption = lazy_instance(GaussianNoise, factor=0.5, seed=0),
        train_on: Literal["clean", "noisy", "both"] = "clean",
        digits: list[int] | None = None,
        holdout_per_class: int = 1000,
        synthetic_size: tuple[int, int] = (2000, 500),
        resample_noise: bool = False,
    ) -> None:
        super().__init__()
        if train_on not in ("clean", "noisy", "both"):
            raise ValueError(f"train_on must be clean, noisy or both, got {train_on!r}")
        if digits is not None and (len(set(digits)) < 2 or any(not 0 <= d <= 9 for d in digits)):
            raise ValueError(f"digits must list at least two distinct digits in 0..9, got {digits}")
        self.data_dir = data_dir
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        check_in_range("batch_size", batch_size, 1)
        check_in_range("eval_batch_size", eval_batch_size, 1)
        if val_size is None:
            val_size = 5000 if source == "mnist" else synthetic_size[0] // 5
        check_in_range("val_size", val_size, 0)
        if not digits:  # the training split's size is known without loading anything: check now, before any work
            train_size = 60_000 if source == "mnist" else synthetic_size[0]
            if val_size >= train_size:
                raise ValueError(
                    f"val_size={val_size} must be in [0, {train_size}): the training split has only {train_size} images; lower data.init_args.val_size."
                )
        if source not in ("mnist", "synthetic"):
            raise ValueError(f"source must be mnist or synthetic, got {source!r}")
        self.val_size = val_size
        self.split_seed = split_seed
        self.corruption = corruption
        self.train_on = train_on
        self.digits = list(digits) if digits is not None else None
        self.holdout_per_class = holdout_per_class
        self.synthetic_size = tuple(synthetic_size)
        self.resample_noise = resample_noise
        self.splits: dict[str, dict[str, torch.Tensor]] = {}

    #: the arguments that decide which images and labels a run sees: an alignment config's missing reference is
    #: trained on the same data (the CLI forwards these to the reference recipe).
    reference_data_keys = (
        "data_dir",
        "source",
        "synthetic_size",
        "val_size",
        "split_seed",
        "digits",
        "holdout_per_class",
    )

    @property
    def num_classes(self) -> int:
        return len(self.digits) if self.digits else 10

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        if self.source == "mnist":
            from prefalign.data.mnist import ensure_mnist

            ensure_mnist(self.data_dir)

    def _raw(self) -> dict[str, torch.Tensor]:
        if self.source == "synthetic":
            from prefalign.data.synthetic import synthetic_digits

            return synthetic_digits(*self.synthetic_size, seed=self.split_seed)
        from prefalign.data.mnist import load_mnist

        return load_mnist(self.data_dir)

    def data_fingerprint(self) -> dict:
        """What determines the images and labels of every split (part of the mining cache key)."""
        return {
            "source": self.source if self.source == "mnist" else [self.source, list(self.synthetic_size)],
            "val_size": self.val_size,
            "split_seed": self.split_seed,
            "corruption": self.corruption.fingerprint(),
            "digits": self.digits,
            "holdout_per_class": self.holdout_per_class if self.digits else None,
        }

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _make_split(self, images: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        clean = images.unsqueeze(1).float().div_(255.0)
        return {"x_clean": clean, "x_noisy": self.corruption.corrupt(clean, keys), "y": labels, "key": keys}

    def _splits_key(self) -> tuple:
        # The methods that make splits are part of the key, so a subclass that changes them never gets another's.
        fingerprint = json.dumps(self.data_fingerprint(), sort_keys=True, default=str)
        return (type(self)._raw, type(self)._make_split, fingerprint, self.data_dir, str(self._device()))

    def setup(self, stage: str | None = None) -> None:
        global _last_splits
        if self.splits:
            return
        key = self._splits_key()
        if _last_splits is not None and _last_splits[0] == key:
            self.splits = {name: dict(split) for name, split in _last_splits[1].items()}
            return
        self._build_splits()
        _last_splits = (key, {name: dict(split) for name, split in self.splits.items()})

    def _build_splits(self) -> None:
        raw = self._raw()
        train_keys = torch.arange(len(raw["train_labels"]))
        train_images, train_labels = raw["train_images"], raw["train_labels"]
        test_images, test_labels = raw["test_images"], raw["test_labels"]
        test_keys = torch.arange(len(test_labels)) + TEST_INDEX_OFFSET
        if self.digits:
            # The 1-vs-8 filter notebook: both splits come from the training file; the first holdout_per_class of each digit are test.
            keep_train, keep_test, new_labels = [], [], torch.full_like(train_labels, -1)
            for new, digit in enumerate(self.digits):
                where = torch.nonzero(train_labels == digit).squeeze(1)
                if len(where) <= self.holdout_per_class:
                    raise ValueError(
                        f"digit {digit} has only {len(where)} images; lower holdout_per_class ({self.holdout_per_class})"
                    )
                keep_test.append(where[: self.holdout_per_class])
                keep_train.append(where[self.holdout_per_class :])
                new_labels[where] = new
            test_idx, train_idx = torch.cat(keep_test), torch.cat(keep_train).sort().values
            test_images, test_labels, test_keys = train_images[test_idx], new_labels[test_idx], train_keys[test_idx]
            train_images, train_labels, train_keys = (
                train_images[train_idx],
                new_labels[train_idx],
                train_keys[train_idx],
            )
        if not 0 <= self.val_size < len(train_labels):
            raise ValueError(
                f"val_size={self.val_size} must be in [0, {len(train_labels)}): the training split has only {len(train_labels)} images; lower data.init_args.val_size."
            )
        perm = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, fit_idx = perm[: self.val_size].sort().values, perm[self.val_size :].sort().values
        device = self._device()
        self.splits = {
            "train": self._make_split(train_images[fit_idx], train_labels[fit_idx], train_keys[fit_idx]),
            "val": self._make_split(train_images[val_idx], train_labels[val_idx], train_keys[val_idx]),
            "test": self._make_split(test_images, test_labels, test_keys),
        }
        self.splits = {name: {k: v.to(device) for k, v in split.items()} for name, split in self.splits.items()}

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, tensors: dict[str, torch.Tensor], train: bool, refresh=None) -> TensorBatches:
        rank, world = self._rank_world()
        return TensorBatches(
            tensors,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.split_seed,
            rank=rank,
            world_size=world,
            refresh=refresh,
        )

    def noisy_train_view(self, epoch: int = 0) -> torch.Tensor:
        """The noisy training images of ``epoch`` (always epoch 0's unless ``resample_noise``)."""
        split = self.splits["train"]
        if self.resample_noise and epoch > 0:
            return self.corruption.corrupt(split["x_clean"], split["key"], stream=epoch)
        return split["x_noisy"]

    def train_tensors(self, epoch: int = 0) -> dict[str, torch.Tensor]:
        split = self.splits["train"]
        noisy = self.noisy_train_view(epoch) if self.train_on != "clean" else None
        views = {"clean": [split["x_clean"]], "noisy": [noisy], "both": [noisy, split["x_clean"]]}[self.train_on]
        return {"x": torch.cat(views) if len(views) > 1 else views[0], "y": split["y"].repeat(len(views))}

    def _eval_tensors(self, name: str) -> dict[str, torch.Tensor]:
        split = self.splits[name]
        return {"x_clean": split["x_clean"], "x_noisy": split["x_noisy"], "y": split["y"]}

    def train_dataloader(self) -> TensorBatches:
        return self._loader(
            self.train_tensors(0), train=True, refresh=self.train_tensors if self.resample_noise else None
        )

    def val_dataloader(self) -> TensorBatches | list:
        return self._loader(self._eval_tensors("val"), train=False) if self.val_size else []

    def test_dataloader(self) -> TensorBatches:
        return self._loader(self._eval_tensors("test"), train=False)

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()


__all__ = ["NoisyMNISTDataModule", "TEST_INDEX_OFFSET"]
