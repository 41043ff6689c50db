"""Iterative / online mining: the current policy re-mines the pairs; the reference's log-probs stay the anchor."""

import pytest
import torch

from prefalign.callbacks import IterativeMining
from prefalign.checkpoint import save_weights
from prefalign.cli import main
from prefalign.data import PreferenceDataModule
from prefalign.data.mining import reference_log_probs
from prefalign.models import SeedCNN
from prefalign.models.loading import load_model
from tests.conftest import CONFIGS, SYNTHETIC_ARGS


def test_remine_uses_the_miner_for_pairs_and_the_reference_for_log_probs(tiny_reference, tmp_path):
    dm = PreferenceDataModule(
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        reference_ckpt=str(tiny_reference),
        cache_dir=str(tmp_path),
    )
    dm.setup("fit")
    first = {k: v.clone() for k, v in dm.pairs.items()}
    torch.manual_seed(3)
    miner_path = save_weights(
        SeedCNN(channels=4), tmp_path / "miner.pt"
    )  # an untrained model: mistakes almost everywhere
    assert dm.state_dict() == {}  # nothing for a checkpoint until a round re-mines
    dm.remine(str(miner_path))
    assert dm.state_dict() == {"miners": [str(miner_path)]}  # what a resumed fit replays
    assert len(list(tmp_path.glob("pairs-*.pt"))) == 2  # one cache per mining model
    miner, reference = load_model(miner_path), load_model(tiny_reference)
    pool = dm.splits["train"]["x_noisy"]
    miner_pred = reference_log_probs(miner, pool).argmax(1)
    wrong = miner_pred != dm.splits["train"]["y"]
    assert len(dm.pairs["chosen"]) == int(wrong.sum()) != len(first["chosen"])
    assert torch.equal(dm.pairs["rejected"], miner_pred[wrong])  # the miner's mistakes
    torch.testing.assert_close(
        dm.pairs["ref_logps"], reference_log_probs(reference, pool)[wrong]
    )  # the reference's log-probs


@pytest.mark.parametrize(
    "length",
    [
        ["--trainer.max_epochs=3"],
        ["--trainer.max_epochs=-1", "--trainer.max_steps=3", "--trainer.limit_train_batches=1"],
    ],
    ids=["max_epochs", "max_steps"],
)
def test_iterative_mining_rounds_in_a_fit(tiny_reference, in_tmp, length):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "seed_dpo.yaml"),
            *SYNTHETIC_ARGS,
            f"--model.reference_ckpt={tiny_reference}",
            "--model.backbone=prefalign.models.SeedCNN",
            "--model.backbone.channels=4",
            *length,
            "--trainer.callbacks+=prefalign.callbacks.IterativeMining",
            "--trainer.callbacks.every_n_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--model.log_figures=false",
            "--test_after_fit=false",
        ]
    )
    run = in_tmp / "runs" / "seed_dpo" / "version_0"
    assert sorted(p.name for p in (run / "miners").iterdir()) == [
        "epoch1.pt",
        "epoch2.pt",
    ]  # none after the last epoch (or step)
    assert len(list((in_tmp / "artifacts" / "pairs").glob("pairs-*.pt"))) == 3  # the reference's pairs + two rounds
    assert "mining/round" in (run / "metrics.csv").read_text()


def test_iterative_mining_refuses_data_that_cannot_remine():
    with pytest.raises(ValueError, match="every_n_epochs"):
        IterativeMining(every_n_epochs=0)
    with pytest.raises(ValueError, match="max_rounds"):
        IterativeMining(max_rounds=0)

    class Trainer:
        datamodule = object()

    with pytest.raises(ValueError, match="remine"):
        IterativeMining().setup(Trainer(), None, "fit")

    class Remines:  # the RemineablePreferenceData contract, and nothing else
        pairs, reference_ckpt, mining_stats = {}, None, {}

        def remine(self, path):
            pass

    trainer = Trainer()
    trainer.datamodule = Remines()
    IterativeMining(every_n_epochs=2).setup(trainer, None, "fit")
    assert trainer.reload_dataloaders_every_n_epochs == 2  # the new pairs reach the train loader
