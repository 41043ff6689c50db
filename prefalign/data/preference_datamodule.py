"""PreferenceDataModule: noisy MNIST plus preference pairs mined with the frozen reference (or, re-mining, the policy)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from prefalign.checkpoint import CheckpointError
from prefalign.data.batches import TensorBatches
from prefalign.data.datamodules import NoisyMNISTDataModule
from prefalign.data.mined_pairs import MinedPairs
from prefalign.data.mining import Strategy, mine_pairs, reference_log_probs
from prefalign.digests import file_sha256
from prefalign.models.loading import load_model


class PreferenceDataModule(MinedPairs, NoisyMNISTDataModule):
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
        strategy: ``mistakes`` (the DPO-on-noisy-MNIST notebook), ``hard_negative`` or ``random_negative`` (see
            :mod:`prefalign.data.mining`).
        mine_on: which training view to mine: ``noisy`` (the seed), ``clean`` or ``both``.
        reference_ckpt: the reference weights file; default: the model's ``reference_ckpt``.
        cache_dir: where mined pairs are cached.
        unpaired: train on single responses instead of pairs (KTO/BCO's unpaired setting): each pair becomes a
            desirable (image, chosen) and an undesirable (image, rejected) example, shuffled apart, so a batch
            holds ``x``, ``chosen`` (the response), ``desirable`` (bool) and ``ref_logps``.
        (other arguments: see :class:`NoisyMNISTDataModule`)
    """

    def __init__(
        self,
        strategy: Strategy = "mistakes",
        mine_on: Literal["noisy", "clean", "both"] = "noisy",
        reference_ckpt: str | None = None,
        cache_dir: str = "artifacts/pairs",
        unpaired: bool = False,
        **kwargs: Any,
    ) -> None:
        # The data arguments are NoisyMNISTDataModule's, passed through (the CLI reads them from its signature);
        # only train_on is fixed: pairs are mined, so SFT's choice of view does not apply.
        super().__init__(train_on="clean", **kwargs)
        if mine_on not in ("noisy", "clean", "both"):
            raise ValueError(f"mine_on must be noisy, clean or both, got {mine_on!r}")
        self.strategy = strategy
        self.mine_on = mine_on
        self.unpaired = unpaired
        self.init_mining(reference_ckpt, cache_dir)

    def _mine(self, reference_path: str, miner_path: str | None = None) -> dict[str, torch.Tensor]:
        """Mine with ``miner_path`` (default: the reference); the cached log-probs are always the reference's."""
        reference = load_model(reference_path).to(self._device())
        split = self.splits["train"]
        views = {"noisy": ["x_noisy"], "clean": ["x_clean"], "both": ["x_noisy", "x_clean"]}[self.mine_on]
        pool_x = torch.cat([split[v] for v in views])
        pool_y = split["y"].repeat(len(views))
        ref_logps = reference_log_probs(reference, pool_x, self.eval_batch_size)
        if ref_logps.shape[1] != self.num_classes:
            raise CheckpointError(
                f"reference {reference_path} predicts {ref_logps.shape[1]} classes but the data has {self.num_classes}; use a reference trained on the same digits."
            )
        logps = (
            ref_logps
            if miner_path is None
            else reference_log_probs(load_model(miner_path).to(self._device()), pool_x, self.eval_batch_size)
        )
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
        """The pairs mined with ``miner_path`` (default: the reference), from the cache when it has them."""
        reference_path = self.mining_reference("train it with `python -m prefalign fit --config configs/sft.yaml`")
        key = {"data": self.data_fingerprint(), "strategy": self.strategy, "mine_on": self.mine_on, "format": 1}
        if miner_path is not None:
            key["miner_sha256"] = file_sha256(miner_path)

        def mine() -> dict:
            rank_zero_info(
                f"Mining {self.strategy} pairs on the {self.mine_on} training images with {miner_path or reference_path} ..."
            )
            return self._mine(reference_path, miner_path)

        return self.cached_pairs(f"pairs-{self.strategy}-{self.mine_on}", reference_path, key, mine)

    def remine(self, miner_path: str) -> None:
        """Replace the pairs with ones mined by ``miner_path`` (the current policy): iterative / online DPO.

        If the miner makes no mistakes to mine (strategy ``mistakes``), the previous pairs are kept, with a warning."""
        self.miners.append(miner_path)
        cached = self._load_or_mine(miner_path)
        if len(cached["rows"]) == 0:
            rank_zero_warn(
                f"re-mining with {miner_path} found no pairs ({self.strategy}); keeping the previous {len(self.pairs['chosen'])} pairs."
            )
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
        self.pairs = {
            "x": x,
            "chosen": cached["chosen"].to(device),
            "rejected": cached["rejected"].to(device),
            "ref_logps": cached["ref_logps"].to(device),
        }
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
        tensors = self.unpaired_tensors if self.unpaired else self.pair_tensors
        return self._loader(tensors(0), train=True, refresh=tensors if self.resample_noise else None)

    def unpaired_tensors(self, epoch: int = 0) -> dict[str, torch.Tensor]:
        """Each pair of ``epoch`` as two single responses: (x, chosen, desirable) and (x, rejected, undesirable)."""
        pairs = self.pair_tensors(epoch)
        n = len(pairs["chosen"])
        out = {
            "x": torch.cat([pairs["x"], pairs["x"]]),
            "chosen": torch.cat([pairs["chosen"], pairs["rejected"]]),
            "desirable": torch.arange(2 * n, device=pairs["chosen"].device) < n,
        }
        if "ref_logps" in pairs:
            out["ref_logps"] = torch.cat([pairs["ref_logps"], pairs["ref_logps"]])
        return out
