"""Under DDP each rank trains on the batches accelerate's ``BatchSamplerShard`` gives TRL's Trainer on that rank
(accelerate's own classes, run here in one process for every rank)."""

from __future__ import annotations

import pytest
import torch

from prefalign.data.hf.datamodule import TRLSamplerOrder, interleave

accelerate_data = pytest.importorskip("accelerate.data_loader")


def accelerate_batches(n: int, batch_size: int, world: int, rank: int, seed: int, epochs: int) -> list[list[int]]:
    sampler = accelerate_data.SeedableRandomSampler(range(n), data_seed=seed)
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    # accelerate's prepare_data_loader shards only with several processes; one process keeps a short last batch.
    shard = accelerate_data.BatchSamplerShard(batches, world, rank) if world > 1 else batches
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [list(b) for b in shard]
    return out


def prefalign_batches(n: int, batch_size: int, world: int, rank: int, seed: int, epochs: int) -> list[list[int]]:
    order = TRLSamplerOrder(
        {"row": torch.arange(n)}, batch_size=batch_size, shuffle=True, seed=seed, rank=rank, world_size=world
    )
    out = []
    for _ in range(epochs):
        out += [b["row"].tolist() for b in order]
    return out


# Divisible, a short last round (completed from the start of the permutation), fewer rows than one round.
@pytest.mark.parametrize(("n", "batch_size", "world"), [(16, 4, 2), (20, 4, 2), (23, 3, 4), (3, 4, 2), (7, 2, 1)])
def test_each_rank_gets_accelerates_batches_in_every_epoch(n, batch_size, world):
    for rank in range(world):
        expected = accelerate_batches(n, batch_size, world, rank, seed=42, epochs=3)
        assert prefalign_batches(n, batch_size, world, rank, seed=42, epochs=3) == expected
        assert len(TRLSamplerOrder({"row": torch.arange(n)}, batch_size, True, rank=rank, world_size=world)) * 3 == len(
            expected
        )


def test_interleave_undoes_the_world_strided_split_of_padded_shards():
    n, world = 7, 3
    shards = [
        TRLSamplerOrder({"row": torch.arange(n)}, batch_size=8, rank=r, world_size=world, pad_shards=True)
        for r in range(world)
    ]
    gathered = torch.stack([next(iter(s))["row"] for s in shards])  # [W, ceil(n / W)], the last one wrapped
    assert interleave(gathered, n).tolist() == list(range(n))
