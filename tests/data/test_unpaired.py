"""Unpaired preference data: each mined pair becomes a desirable and an undesirable single response."""

import torch

from prefalign.cli import main
from prefalign.data import PreferenceDataModule
from tests.conftest import CONFIGS, SYNTHETIC_ARGS


def test_unpaired_batches_hold_every_response_once_with_its_flag(tiny_reference, tmp_path):
    dm = PreferenceDataModule(
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        strategy="hard_negative",
        reference_ckpt=str(tiny_reference),
        cache_dir=str(tmp_path),
        unpaired=True,
        batch_size=64,
    )
    dm.setup("fit")
    n = len(dm.pairs["chosen"])
    batches = list(dm.train_dataloader())
    responses = torch.cat([b["chosen"] for b in batches])
    desirable = torch.cat([b["desirable"] for b in batches])
    assert "rejected" not in batches[0] and len(responses) == 2 * n and int(desirable.sum()) == n
    # the desirable responses are the chosen labels, the undesirable ones the rejected labels (as multisets)
    assert torch.equal(responses[desirable].sort().values, dm.pairs["chosen"].sort().values)
    assert torch.equal(responses[~desirable].sort().values, dm.pairs["rejected"].sort().values)
    # shuffled apart: a batch mixes both kinds
    assert 0 < int(batches[0]["desirable"].sum()) < len(batches[0]["desirable"])
    assert batches[0]["ref_logps"].shape == (len(batches[0]["chosen"]), 10)


def test_kto_trains_on_unpaired_data_through_the_cli(tiny_reference, in_tmp):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "seed_dpo.yaml"),
            *SYNTHETIC_ARGS,
            f"--model.reference_ckpt={tiny_reference}",
            "--model.backbone.channels=4",
            "--model.objective=prefalign.objectives.KTO",
            "--data.init_args.strategy=hard_negative",
            "--data.init_args.unpaired=true",
            "--trainer.max_epochs=1",
            "--model.log_figures=false",
            "--trainer.log_every_n_steps=1",
        ]
    )
    metrics = (in_tmp / "runs/seed_dpo/version_0/metrics.csv").read_text()
    assert "train/rewards/chosen" in metrics and "train/kl" in metrics and "test/acc_noisy" in metrics
