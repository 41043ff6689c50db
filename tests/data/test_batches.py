import pytest
import torch

from prefalign.data.batches import TensorBatches


def _data(n=10):
    return {"x": torch.arange(n).float().unsqueeze(1), "y": torch.arange(n)}


def test_sequential_batches_cover_everything_in_order():
    batches = list(TensorBatches(_data(10), batch_size=4))
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["y"] for b in batches]), torch.arange(10))
    assert torch.equal(batches[0]["x"].squeeze(1), batches[0]["y"].float())


def test_shuffle_is_a_seeded_permutation_that_changes_per_epoch():
    loader = TensorBatches(_data(10), batch_size=3, shuffle=True, seed=1)
    first = torch.cat([b["y"] for b in loader])
    second = torch.cat([b["y"] for b in loader])
    assert sorted(first.tolist()) == list(range(10)) and sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)
    again = torch.cat([b["y"] for b in TensorBatches(_data(10), batch_size=3, shuffle=True, seed=1)])
    assert torch.equal(first, again)


def test_rank_shards_partition_eval_data_without_duplicates():
    shards = [torch.cat([b["y"] for b in TensorBatches(_data(11), 4, rank=r, world_size=3)]) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11))


def test_training_shards_are_padded_to_equal_length():
    loaders = [TensorBatches(_data(11), 2, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert len({len(loader) for loader in loaders}) == 1
    seen = torch.cat([torch.cat([b["y"] for b in loader]) for loader in loaders])
    assert set(seen.tolist()) == set(range(11)) and len(seen) == 12


def test_state_dict_resumes_mid_epoch_with_the_same_permutation():
    full = TensorBatches(_data(20), 3, shuffle=True, seed=5)
    list(full)  # epoch 0
    reference = [b["y"] for b in full]  # epoch 1
    interrupted = TensorBatches(_data(20), 3, shuffle=True, seed=5)
    list(interrupted)
    it = iter(interrupted)
    head = [next(it)["y"] for _ in range(2)]
    state = interrupted.state_dict()
    resumed = TensorBatches(_data(20), 3, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    tail = [b["y"] for b in resumed]
    assert all(torch.equal(a, b) for a, b in zip(head + tail, reference))
    assert len(head + tail) == len(reference)


def test_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        TensorBatches({"x": torch.zeros(3), "y": torch.zeros(4)}, 2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches(_data(), 0)
