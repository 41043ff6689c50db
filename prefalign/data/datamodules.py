"""DataModules: noisy MNIST (clean + noisy views of every split) and mined preference pairs.

Everything lives in memory as tensors (MNIST is 47 MB as uint8) and batches are index slices
(:class:`~prefalign.data.batches.TensorBatches`). When the trainer runs on a GPU the tensors are moved to
it once, so batches never touch the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from prefalign.checkpoint import CheckpointError, load_model
from prefalign.core.pair_cache import file_sha256, fingerprint, load_or_build
from prefalign.data.batches import TensorBatches
from prefalign.data.corruptions import Corruption, GaussianNoise
from prefalign.data.mining import Strategy, mine_pairs, reference_log_probs
from prefalign.objectives.base import check_in_range


# Test images are keyed apart from training images so image i of each split gets different noise.
TEST_INDEX_OFFSET = 1_000_000


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
        corruption: how the noisy view is made (default: the seed recipe, Gaussian noise ×0.5, clipped).
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
                raise ValueError(f"val_size={val_size} must be in [0, {train_size}): the training split has only {train_size} images; lower data.init_args.val_size.")
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
    reference_data_keys = ("data_dir", "source", "synthetic_size", "val_size", "split_seed", "digits", "holdout_per_class")

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

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self._raw()
        train_keys = torch.arange(len(raw["train_labels"]))
        train_images, train_labels = raw["train_images"], raw["train_labels"]
        test_images, test_labels = raw["test_images"], raw["test_labels"]
        test_keys = torch.arange(len(test_labels)) + TEST_INDEX_OFFSET
        if self.digits:
            # Seed 004: both splits come from the training file; the first holdout_per_class of each digit are test.
            keep_train, keep_test, new_labels = [], [], torch.full_like(train_labels, -1)
            for new, digit in enumerate(self.digits):
                where = torch.nonzero(train_labels == digit).squeeze(1)
                if len(where) <= self.holdout_per_class:
                    raise ValueError(f"digit {digit} has only {len(where)} images; lower holdout_per_class ({self.holdout_per_class})")
                keep_test.append(where[: self.holdout_per_class])
                keep_train.append(where[self.holdout_per_class :])
                new_labels[where] = new
            test_idx, train_idx = torch.cat(keep_test), torch.cat(keep_train).sort().values
            test_images, test_labels, test_keys = train_images[test_idx], new_labels[test_idx], train_keys[test_idx]
            train_images, train_labels, train_keys = train_images[train_idx], new_labels[train_idx], train_keys[train_idx]
        if not 0 <= self.val_size < len(train_labels):
            raise ValueError(f"val_size={self.val_size} must be in [0, {len(train_labels)}): the training split has only {len(train_labels)} images; lower data.init_args.val_size.")
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
        return self._loader(self.train_tensors(0), train=True, refresh=self.train_tensors if self.resample_noise else None)

    def val_dataloader(self) -> TensorBatches | list:
        return self._loader(self._eval_tensors("val"), train=False) if self.val_size else []

    def test_dataloader(self) -> TensorBatches:
        return self._loader(self._eval_tensors("test"), train=False)

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()


class PreferenceDataModule(NoisyMNISTDataModule):
    """Noisy MNIST plus (image, chosen, rejected) pairs mined with the frozen reference.

    The pairs and the reference's full log-probabilities on their images are computed once and cached
    on disk under ``cache_dir``, keyed by a fingerprint of (reference weights, data, noise, strategy,
    views). A changed ingredient changes the key, so a stale cache is never reused. Under DDP, rank 0
    mines and writes; the other ranks wait at a barrier and read.

    Training batches hold ``x``, ``chosen``, ``rejected`` and ``ref_logps`` (``[B, C]``), so a DPO step
    costs one policy forward and backward: the reference is not run again. With ``resample_noise`` the
    pairs (image index, chosen, rejected) stay fixed but their noisy images are re-drawn every epoch, so
    the cached log-probs would be stale: batches then omit ``ref_logps`` and the model runs the reference.

    Args:
        strategy: ``mistakes`` (seed 000), ``hard_negative`` or ``random_negative`` (see
            :mod:`prefalign.data.mining`).
        mine_on: which training view to mine: ``noisy`` (the seed), ``clean`` or ``both``.
        reference_ckpt: the reference weights file; default: the model's ``reference_ckpt``.
        cache_dir: where mined pairs are cached.
        (other arguments: see :class:`NoisyMNISTDataModule`)
    """

    def __init__(
        self,
        strategy: Strategy = "mistakes",
        mine_on: Literal["noisy", "clean", "both"] = "noisy",
        reference_ckpt: str | None = None,
        cache_dir: str = "artifacts/pairs",
        data_dir: str | None = None,
        source: Literal["mnist", "synthetic"] = "mnist",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        split_seed: int = 0,
        corruption: Corruption = lazy_instance(GaussianNoise, factor=0.5, seed=0),
        digits: list[int] | None = None,
        holdout_per_class: int = 1000,
        synthetic_size: tuple[int, int] = (2000, 500),
        resample_noise: bool = False,
    ) -> None:
        super().__init__(
            data_dir=data_dir, source=source, batch_size=batch_size, eval_batch_size=eval_batch_size,
            val_size=val_size, split_seed=split_seed, corruption=corruption, train_on="clean",
            digits=digits, holdout_per_class=holdout_per_class, synthetic_size=synthetic_size,
            resample_noise=resample_noise,
        )
        if mine_on not in ("noisy", "clean", "both"):
            raise ValueError(f"mine_on must be noisy, clean or both, got {mine_on!r}")
        self.strategy = strategy
        self.mine_on = mine_on
        self.reference_ckpt = reference_ckpt
        self.cache_dir = cache_dir
        self.pairs: dict[str, torch.Tensor] = {}
        self.mining_stats: dict[str, float] = {}

    def _reference_path(self) -> str:
        path = self.reference_ckpt
        if path is None:
            module = getattr(getattr(self, "trainer", None), "lightning_module", None)
            path = getattr(module, "reference_ckpt", None)
        if path is None:
            raise CheckpointError("PreferenceDataModule needs a reference to mine pairs: set model.reference_ckpt (or data.reference_ckpt).")
        if not Path(path).is_file():
            raise CheckpointError(
                f"reference checkpoint not found: {path}. Train it with `python -m prefalign fit --config configs/sft.yaml` "
                "(alignment configs with reference_recipe do this automatically)."
            )
        return path

    def cache_path(self, reference_path: str, miner_path: str | None = None) -> tuple[Path, str]:
        """The cache file for this reference (and, when re-mining, the weights that mined) and data, and its fingerprint."""
        key = {"reference_sha256": file_sha256(reference_path), "data": self.data_fingerprint(), "strategy": self.strategy, "mine_on": self.mine_on, "format": 1}
        if miner_path is not None:
            key["miner_sha256"] = file_sha256(miner_path)
        digest = fingerprint(key)
        return Path(self.cache_dir) / f"pairs-{self.strategy}-{self.mine_on}-{digest}.pt", digest

    def _mine(self, reference_path: str, miner_path: str | None = None) -> dict[str, torch.Tensor]:
        """Mine with ``miner_path`` (default: the reference); the cached log-probs are always the reference's."""
        reference = load_model(reference_path).to(self._device())
        split = self.splits["train"]
        views = {"noisy": ["x_noisy"], "clean": ["x_clean"], "both": ["x_noisy", "x_clean"]}[self.mine_on]
        pool_x = torch.cat([split[v] for v in views])
        pool_y = split["y"].repeat(len(views))
        ref_logps = reference_log_probs(reference, pool_x, self.eval_batch_size)
        if ref_logps.shape[1] != self.num_classes:
            raise CheckpointError(f"reference {reference_path} predicts {ref_logps.shape[1]} classes but the data has {self.num_classes}; use a reference trained on the same digits.")
        logps = ref_logps if miner_path is None else reference_log_probs(load_model(miner_path).to(self._device()), pool_x, self.eval_batch_size)
        rows, chosen, rejected = mine_pairs(logps, pool_y, self.strategy, seed=self.split_seed)
        return {
            "rows": rows.cpu(),
            "chosen": chosen.cpu(),
            "rejected": rejected.cpu(),
            "ref_logps": ref_logps[rows].cpu(),
            "pool_accuracy": (logps.argmax(1) == pool_y).float().mean().cpu(),
        }

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage not in (None, "fit") or self.pairs:
            return
        self._attach(self._load_or_mine(None))

    def _load_or_mine(self, miner_path: str | None) -> dict:
        reference_path = self._reference_path()
        path, digest = self.cache_path(reference_path, miner_path)

        def mine() -> dict:
            rank_zero_info(f"Mining {self.strategy} pairs on the {self.mine_on} training images with {miner_path or reference_path} ...")
            return self._mine(reference_path, miner_path)

        return load_or_build(path, digest, mine, getattr(self, "trainer", None))

    def remine(self, miner_path: str) -> None:
        """Replace the pairs with ones mined by ``miner_path`` (the current policy): iterative / online DPO.

        If the miner makes no mistakes to mine (strategy ``mistakes``), the previous pairs are kept, with a warning."""
        cached = self._load_or_mine(miner_path)
        if len(cached["rows"]) == 0:
            rank_zero_warn(f"re-mining with {miner_path} found no pairs ({self.strategy}); keeping the previous {len(self.pairs['chosen'])} pairs.")
            return
        self._attach(cached)

    def _attach(self, cached: dict) -> None:
        if len(cached["rows"]) == 0:
            raise ValueError(
                f"no preference pairs were mined: the reference makes no mistakes on the {self.mine_on} training images "
                f"with strategy {self.strategy!r}. Use strategy hard_negative (every image gets a pair) or a noisier corruption."
            )
        split = self.splits["train"]
        views = {"noisy": ["x_noisy"], "clean": ["x_clean"], "both": ["x_noisy", "x_clean"]}[self.mine_on]
        device = split["y"].device
        rows = cached["rows"].to(device)
        # Gather the mined images once into one contiguous tensor: training batches are then plain slices.
        n = len(split["y"])
        x = torch.empty((len(rows), *split["x_clean"].shape[1:]), device=device)
        for i, view in enumerate(views):
            sel = (rows >= i * n) & (rows < (i + 1) * n)
            x[sel] = split[view][rows[sel] - i * n]
        self.pairs = {"x": x, "chosen": cached["chosen"].to(device), "rejected": cached["rejected"].to(device), "ref_logps": cached["ref_logps"].to(device)}
        # Provenance of each pair's image, to re-draw its noise per epoch: (row in the train split, is it noisy?).
        self._pair_source = (rows % n, rows < n if views[0] == "x_noisy" else torch.zeros_like(rows, dtype=torch.bool))
        ref_acc_on_pairs = (cached["ref_logps"].argmax(1) == cached["chosen"]).float().mean().item()
        self.mining_stats = {
            "mining/pairs": float(len(rows)),
            "mining/pool_size": float(n * len(views)),
            "mining/reference_accuracy_pool": float(cached["pool_accuracy"]),
            "mining/reference_accuracy_pairs": ref_acc_on_pairs,
        }
        rank_zero_info(
            f"Mined {len(rows)} pairs ({self.strategy}, {self.mine_on}) from {n * len(views)} images; "
            f"reference accuracy on the pool {float(cached['pool_accuracy']):.4f}, on the mined images {ref_acc_on_pairs:.4f}"
        )

    def pair_tensors(self, epoch: int = 0) -> dict[str, torch.Tensor]:
        """The training pairs of ``epoch``: with ``resample_noise``, fresh noise and no (stale) ``ref_logps``."""
        if not self.resample_noise:
            return self.pairs
        rows, noisy = self._pair_source
        x = self.pairs["x"]
        if epoch > 0:
            split = self.splits["train"]
            x = x.clone()
            x[noisy] = self.corruption.corrupt(split["x_clean"][rows[noisy]], split["key"][rows[noisy]], stream=epoch)
        return {"x": x, "chosen": self.pairs["chosen"], "rejected": self.pairs["rejected"]}

    def train_dataloader(self) -> TensorBatches:
        return self._loader(self.pair_tensors(0), train=True, refresh=self.pair_tensors if self.resample_noise else None)
