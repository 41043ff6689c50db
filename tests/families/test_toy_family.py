"""A test-only family trains through the unchanged core: SFT, then DPO, then PPO-lite, via prefalign.cli.main."""

import json

import pytest

from prefalign.cli import main
from prefalign.models.loading import load_model

TOY = [
    "--model.backbone=tests.families.toy.ToySeqModel",
    "--model.family=tests.families.toy.ToyFamily",
    "--data=tests.families.toy.ToyDataModule",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.save_dir=runs",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_checkpointing=false",
    "--seed_everything=0",
]


def run(in_tmp, name, *args):
    main(["fit", *TOY, f"--trainer.logger.name={name}", *args])
    return json.loads((in_tmp / "runs" / name / "version_0" / "results_test.json").read_text())["metrics"]


def test_toy_family_sft_then_dpo_then_ppo_through_the_cli(in_tmp):
    # SFT: a few steps from random init, so the reference is right on some prompts and wrong on others.
    sft = run(
        in_tmp,
        "sft",
        "--model.objective=prefalign.objectives.SFT",
        "--model.export_path=ref.pt",
        "--trainer.max_steps=6",
        "--model.optimizer=torch.optim.Adam",
        "--model.optimizer.lr=0.3",
    )
    assert (in_tmp / "ref.pt").is_file() and 0.0 <= sft["test/reward"] <= 1.0
    reference = load_model(in_tmp / "ref.pt")
    assert type(reference).__name__ == "ToySeqModel"

    dpo = run(
        in_tmp,
        "dpo",
        "--model.objective=prefalign.objectives.DPO",
        "--model.objective.beta=1.0",
        "--model.reference_ckpt=ref.pt",
        "--data.pairs=true",
        "--trainer.max_epochs=10",
        "--model.optimizer=torch.optim.Adam",
        "--model.optimizer.lr=0.3",
    )
    assert list((in_tmp / "artifacts" / "pairs").glob("toy-*.pt")), "pairs are cached under their fingerprint"
    assert dpo["test/reward"] == 1.0 > sft["test/reward"]

    ppo = run(
        in_tmp,
        "ppo",
        "--model.objective=prefalign.objectives.PPOLite",
        "--model.objective.k=4",
        "--model.objective.kl_coef=0.01",
        "--model.objective.reward=tests.families.toy.ToyReward",
        "--model.reference_ckpt=ref.pt",
        "--trainer.max_epochs=8",
        "--model.optimizer=torch.optim.Adam",
        "--model.optimizer.lr=0.1",
    )
    assert ppo["test/reward"] == 1.0
    csv = (in_tmp / "runs" / "ppo" / "version_0" / "metrics.csv").read_text()
    assert "ppo/kl" in csv and "ppo/reward_mean" in csv


def test_an_objective_the_family_cannot_support_is_refused_at_config_time(in_tmp):
    from prefalign.core.module import AlignmentModule
    from prefalign.objectives import ORPO, PPOLite
    from tests.families.toy import ToyFamily, ToySeqModel

    class NoProbabilities(ToyFamily):
        capabilities = frozenset({"sampling"})

    with pytest.raises(
        ValueError,
        match=r"ORPO cannot train a NoProbabilities model: it needs true_logprob: true, normalised log-probabilities",
    ):
        AlignmentModule(backbone=ToySeqModel(), objective=ORPO(), family=NoProbabilities())

    class NoSampling(ToyFamily):
        capabilities = frozenset({"true_logprob"})

    with pytest.raises(ValueError, match="PPOLite cannot train a NoSampling model: it needs sampling"):
        AlignmentModule(backbone=ToySeqModel(), objective=PPOLite(kl_coef=0.0), family=NoSampling())
