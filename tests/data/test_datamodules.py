import pytest
import torch

from prefalign.checkpoint import CheckpointError, save_weights
from prefalign.data import NoisyMNISTDataModule, PreferenceDataModule
from prefalign.data.mining import mine_pairs
from prefalign.models import SeedCNN


def _dm(**kw):
    kw = {"source": "synthetic", "synthetic_size": (600, 200), "val_size": 100, **kw}
    dm = NoisyMNISTDataModule(**kw)
    dm.setup("fit")
    return dm


def test_splits_shapes_views_and_disjointness():
    dm = _dm()
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert train["x_clean"].shape == (500, 1, 28, 28) and val["y"].shape == (100,) and test["y"].shape == (200,)
    assert train["x_clean"].dtype == torch.float32 and 0 <= train["x_noisy"].min() and train["x_noisy"].max() <= 1
    assert not set(train["key"].tolist()) & set(val["key"].tolist())
    assert (train["x_noisy"] - train["x_clean"]).abs().mean() > 0.1  # the noise is really there
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"x_clean", "x_noisy", "y"}


def test_noise_is_identical_across_datamodules_and_independent_of_split():
    a, b = _dm(), _dm()
    assert torch.equal(a.splits["test"]["x_noisy"], b.splits["test"]["x_noisy"])
    c = _dm(val_size=50)  # a different split keeps each image's own noise
    key = a.splits["train"]["key"][0]
    where = torch.nonzero(c.splits["train"]["key"] == key).item()
    assert torch.equal(a.splits["train"]["x_noisy"][0], c.splits["train"]["x_noisy"][where])


@pytest.mark.parametrize("train_on,size", [("clean", 500), ("noisy", 500), ("both", 1000)])
def test_train_views(train_on, size):
    dm = _dm(train_on=train_on, batch_size=1000)
    tensors = dm.train_tensors()
    assert len(tensors["x"]) == size
    if train_on == "noisy":
        assert torch.equal(tensors["x"], dm.splits["train"]["x_noisy"])


def test_binary_subset_relabels_and_holds_out_per_class():
    dm = _dm(digits=[8, 1], holdout_per_class=20, synthetic_size=(600, 100), val_size=10)
    assert dm.num_classes == 2
    assert torch.bincount(dm.splits["test"]["y"]).tolist() == [20, 20]
    assert set(dm.splits["train"]["y"].unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="holdout_per_class"):
        _dm(digits=[8, 1], holdout_per_class=10_000)
    with pytest.raises(ValueError, match="two distinct digits"):
        NoisyMNISTDataModule(digits=[3])


def test_mining_strategies_on_hand_made_logps():
    logps = torch.log_softmax(torch.tensor([[3.0, 2.0, 0.0], [0.0, 1.0, 5.0], [0.0, 4.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1, 1])
    rows, chosen, rejected = mine_pairs(logps, labels, "mistakes")
    assert rows.tolist() == [1] and chosen.tolist() == [1] and rejected.tolist() == [2]
    rows, chosen, rejected = mine_pairs(logps, labels, "hard_negative")
    assert rows.tolist() == [0, 1, 2] and rejected.tolist() == [1, 2, 2]
    rows, chosen, rejected = mine_pairs(logps, labels, "random_negative", seed=0)
    assert (rejected != chosen).all() and len(rows) == 3
    big = mine_pairs(torch.zeros(3000, 10), torch.zeros(3000, dtype=torch.long), "random_negative")[2]
    assert set(big.tolist()) == set(range(1, 10))  # uniform over the wrong classes
    with pytest.raises(ValueError, match="unknown mining strategy"):
        mine_pairs(logps, labels, "best")


def test_preference_datamodule_mines_caches_and_invalidates(tiny_reference, tmp_path):
    kw = dict(
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        reference_ckpt=str(tiny_reference),
        cache_dir=str(tmp_path),
    )
    dm = PreferenceDataModule(strategy="hard_negative", mine_on="both", **kw)
    dm.setup("fit")
    assert len(dm.pairs["x"]) == 1000 and dm.pairs["ref_logps"].shape == (1000, 10)
    assert dm.mining_stats["mining/pairs"] == 1000
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "chosen", "rejected", "ref_logps"}
    assert (batch["chosen"] != batch["rejected"]).all()
    # The cached reference log-probs are the reference's own on exactly those images.
    from prefalign.models.loading import load_model

    ref = load_model(tiny_reference).eval()
    with torch.no_grad():
        expected = torch.log_softmax(ref(dm.pairs["x"][:50]), 1)
    torch.testing.assert_close(dm.pairs["ref_logps"][:50], expected)
    files = list(tmp_path.glob("pairs-*.pt"))
    assert len(files) == 1
    # Same ingredients: the cache is reused (the file is not rewritten).
    mtime = files[0].stat().st_mtime_ns
    PreferenceDataModule(strategy="hard_negative", mine_on="both", **kw).setup("fit")
    assert files[0].stat().st_mtime_ns == mtime
    # Another reference: a new key, never the stale file.
    other = tmp_path / "other.pt"
    save_weights(SeedCNN(channels=4), other)
    dm2 = PreferenceDataModule(strategy="hard_negative", mine_on="both", **{**kw, "reference_ckpt": str(other)})
    dm2.setup("fit")
    assert len(list(tmp_path.glob("pairs-*.pt"))) == 2
    assert not torch.equal(dm2.pairs["ref_logps"], dm.pairs["ref_logps"])


def test_mistakes_strategy_keeps_only_errors(tiny_reference, tmp_path):
    dm = PreferenceDataModule(
        strategy="mistakes",
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        reference_ckpt=str(tiny_reference),
        cache_dir=str(tmp_path),
    )
    dm.setup("fit")
    assert 0 < len(dm.pairs["x"]) < 500
    assert (dm.pairs["ref_logps"].argmax(1) == dm.pairs["rejected"]).all()
    assert dm.mining_stats["mining/reference_accuracy_pairs"] == 0.0


def test_empty_pair_set_is_a_clear_error(tiny_reference, tmp_path, monkeypatch):
    import prefalign.data.preference_datamodule as dms

    # Stand in for a reference that is right on every image: it leaves no mistakes to mine.
    def perfect(model, images, batch_size):
        return torch.log_softmax(100 * torch.nn.functional.one_hot(labels[: len(images)], 10).float(), 1)

    pdm = PreferenceDataModule(
        strategy="mistakes",
        source="synthetic",
        synthetic_size=(300, 50),
        val_size=50,
        reference_ckpt=str(tiny_reference),
        cache_dir=str(tmp_path),
    )
    NoisyMNISTDataModule.setup(pdm, "fit")
    labels = pdm.splits["train"]["y"]
    monkeypatch.setattr(dms, "reference_log_probs", perfect)
    with pytest.raises(ValueError, match="no preference pairs were mined.*hard_negative"):
        pdm.setup("fit")


def test_missing_reference_is_a_clear_error(tmp_path):
    dm = PreferenceDataModule(
        source="synthetic", synthetic_size=(300, 50), val_size=50, reference_ckpt=str(tmp_path / "nope.pt")
    )
    with pytest.raises(CheckpointError, match="not found.*configs/sft.yaml"):
        dm.setup("fit")
    with pytest.raises(CheckpointError, match="reference_ckpt"):
        PreferenceDataModule(source="synthetic", synthetic_size=(300, 50), val_size=50).setup("fit")


def test_resample_noise_redraws_training_noise_per_epoch_only():
    dm = _dm(train_on="noisy", resample_noise=True)
    fixed = _dm(train_on="noisy")
    e0, e1, e2 = dm.train_tensors(0)["x"], dm.train_tensors(1)["x"], dm.train_tensors(2)["x"]
    assert torch.equal(e0, fixed.train_tensors(0)["x"])  # epoch 0 is the fixed noise
    assert not torch.equal(e0, e1) and not torch.equal(e1, e2)
    assert torch.equal(e1, dm.train_tensors(1)["x"])  # deterministic per epoch
    assert torch.equal(dm.splits["test"]["x_noisy"], fixed.splits["test"]["x_noisy"])
    loader = dm.train_dataloader()
    first = torch.cat([b["x"] for b in loader])
    second = torch.cat([b["x"] for b in loader])
    assert not torch.equal(first.sort(0).values, second.sort(0).values)


def test_resampled_pairs_keep_labels_and_drop_stale_reference_logps(tiny_reference, tmp_path):
    dm = PreferenceDataModule(
        strategy="hard_negative",
        mine_on="both",
        resample_noise=True,
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        reference_ckpt=str(tiny_reference),
        cache_dir=str(tmp_path),
    )
    dm.setup("fit")
    e0, e1 = dm.pair_tensors(0), dm.pair_tensors(1)
    assert (
        "ref_logps" not in e0
        and torch.equal(e0["chosen"], e1["chosen"])
        and torch.equal(e0["rejected"], e1["rejected"])
    )
    noisy_part, clean_part = slice(0, 500), slice(500, 1000)
    assert not torch.equal(e0["x"][noisy_part], e1["x"][noisy_part])
    assert torch.equal(e0["x"][clean_part], e1["x"][clean_part])
    torch.testing.assert_close(e1["x"][clean_part], dm.splits["train"]["x_clean"])


def test_a_second_data_module_with_the_same_data_reuses_the_splits(monkeypatch):
    """A pipeline's reference fit and alignment fit build the same splits: the second gets them without loading or
    corrupting anything again, and its own split dicts (the tensors are shared, never written)."""
    first = _dm(split_seed=11)

    def must_not_load(*args, **kwargs):
        raise AssertionError("the splits were built again")

    monkeypatch.setattr("prefalign.data.synthetic.synthetic_digits", must_not_load)
    second = _dm(split_seed=11)
    assert second.splits["train"]["x_noisy"] is first.splits["train"]["x_noisy"]
    assert second.splits["train"] is not first.splits["train"]
    second.splits["train"]["extra"] = torch.zeros(1)
    assert "extra" not in first.splits["train"]
    with pytest.raises(AssertionError, match="built again"):
        _dm(split_seed=12)  # other data: built anew
    monkeypatch.undo()
    from prefalign.data.corruptions import GaussianNoise

    other_noise = _dm(split_seed=11, corruption=GaussianNoise(factor=0.3))
    assert not torch.equal(other_noise.splits["train"]["x_noisy"], first.splits["train"]["x_noisy"])
