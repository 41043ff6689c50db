"""Batches as index slices of in-memory tensors: no per-sample ``__getitem__``, no worker processes."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

# On CPU, a forward pass over many MNIST images pushes the seed CNN's activations (64x28x28 floats per image: 3.2 MB
# for 16 images, 13 MB for 64, in fp32) out of cache, and every image gets slower. Evaluation and mining therefore run
# the model in chunks of at most this many images on CPU; on accelerators a batch is one call. Seed CNN, no grad, one
# thread, 2-core AMD EPYC (AVX2), ms per 64 images: chunks of 8: 6.2, 16: 6.5, 32: 6.8, 64: 8.4, 128: 8.3 (the
# AVX512 benchmark machine also measured chunks over 64 2-4x slower). 16 keeps the activations in a per-core cache
# share on both. Only the speed changes: the chunks' outputs are concatenated, so results are the same up to fp rounding.
CPU_FORWARD_CHUNK = 16


def chunked_forward(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, max_batch: int | None = None
) -> torch.Tensor:
    """``fn(x)`` row-wise, in chunks of ``max_batch`` rows (capped at :data:`CPU_FORWARD_CHUNK` on CPU), concatenated."""
    size = max_batch or len(x)
    if x.device.type == "cpu":
        size = min(size, CPU_FORWARD_CHUNK)
    if len(x) <= size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(size)])


class TensorBatches:
    """Iterate a dict of equal-length tensors in batches of ``batch_size`` rows.

    Shuffling draws one permutation per epoch from ``(seed, epoch)``, the same on every rank; rank ``r``
    of ``world_size`` takes every ``world_size``-th index. Training shards are padded (by wrapping) to
    equal length so every rank runs the same number of steps, as ``DistributedSampler`` does; evaluation
    shards are not padded, so no sample is counted twice.

    ``refresh(epoch)``, when given, is called at the start of every epoch and returns that epoch's tensors
    (same keys and length): how the training noise is re-drawn each epoch without a worker process.

    It is *stateful* in Lightning's sense (``state_dict``/``load_state_dict``): a run resumed from a
    mid-epoch checkpoint continues with the same permutation at the next unseen batch.
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad_shards: bool | None = None,
        refresh: Callable[[int], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all tensors must have the same length, got {lengths}")
        self.tensors = tensors
        self.n = next(iter(lengths.values()))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.pad_shards = shuffle if pad_shards is None else pad_shards
        self.refresh = refresh
        self.epoch = 0
        self._resume_batch = 0  # first batch to yield in the current epoch (non-zero only after a resume)
        self._yielded = 0

    def _shard_size(self) -> int:
        if self.pad_shards:
            return -(-self.n // self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.drop_last else -(-size // self.batch_size)

    def _indices(self) -> torch.Tensor:
        device = next(iter(self.tensors.values())).device
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.pad_shards and self.n % self.world_size:
            order = torch.cat([order, order[: self.world_size - self.n % self.world_size]])
        return order[self.rank :: self.world_size].to(device)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # Lightning stops after len(self) batches without exhausting the iterator, so a pass that yielded
        # batches and was left unfinished also ends its epoch: otherwise every epoch would replay epoch 0.
        if self._yielded and not self._resume_batch:
            self.epoch += 1
            self._yielded = 0
        return self._batches()

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.refresh is not None:
            self.tensors = self.refresh(self.epoch)
        indices = self._indices()
        contiguous = not self.shuffle and self.world_size == 1
        start_batch, self._resume_batch = self._resume_batch, 0
        for b in range(start_batch, len(self)):
            lo = b * self.batch_size
            self._yielded = b + 1
            if contiguous:  # a view, no copy
                yield {k: v[lo : lo + self.batch_size] for k, v in self.tensors.items()}
            else:
                idx = indices[lo : lo + self.batch_size]
                yield {k: v[idx] for k, v in self.tensors.items()}
        self.epoch += 1
        self._yielded = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, done = int(state["epoch"]), int(state["batches_yielded"])
        if done >= len(self):  # saved at the end of an epoch: resume at the start of the next one
            self.epoch, done = self.epoch + 1, 0
        self._resume_batch = self._yielded = done


class AssembledBatches:
    """Rows drawn by a :class:`TensorBatches` (seeded shuffling, DDP shards, resumable), each batch turned into what
    a family reads by :meth:`assemble`: the iteration and resume state are the sampler's."""

    rows: TensorBatches

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (self.assemble(b) for b in iter(self.rows))

    def state_dict(self) -> dict[str, int]:
        return self.rows.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.rows.load_state_dict(state)

    def assemble(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
