import lightning as L
import pytest
import torch

from prefalign.checkpoint import CheckpointError
from prefalign.core.module import AlignmentModule
from prefalign.data import NoisyMNISTDataModule, PreferenceDataModule
from prefalign.models import LeNet, SeedCNN
from prefalign.objectives import DPO, SFT, PPOLite


def _trainer(tmp_path, **kw):
    kw = {
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "num_sanity_val_steps": 0,
        **kw,
    }
    return L.Trainer(**kw)


def _synthetic(cls=NoisyMNISTDataModule, **kw):
    return cls(source="synthetic", synthetic_size=(600, 200), val_size=100, eval_batch_size=256, **kw)


def test_sft_learns_on_synthetic_data(tmp_path):
    L.seed_everything(0)
    model = AlignmentModule(backbone=SeedCNN(channels=4), objective=SFT(), log_figures=False)
    trainer = _trainer(tmp_path, max_epochs=3)
    dm = _synthetic()
    trainer.fit(model, dm)
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/acc_clean"] > 0.9
    assert metrics["test/acc_noisy"] > 0.2  # chance is 0.1
    assert {"test/f1_noisy", "test/ece_noisy", "test/entropy_clean"} <= set(metrics)
    assert (tmp_path / "policy.pt").is_file()


def test_dpo_starts_from_reference_keeps_it_frozen_and_moves_the_policy(tiny_reference, tmp_path):
    L.seed_everything(0)
    model = AlignmentModule(
        backbone=SeedCNN(channels=4), objective=DPO(beta=0.1), reference_ckpt=str(tiny_reference), log_figures=False
    )
    dm = _synthetic(PreferenceDataModule, strategy="hard_negative", cache_dir=str(tmp_path))
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, dm)
    from prefalign.models.loading import load_model

    original = load_model(tiny_reference)
    ref = model._reference
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), original.state_dict().values()))
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    assert "_reference" not in dict(model.named_modules()) and not any(
        k.startswith("_reference") for k in model.state_dict()
    )
    changed = any(
        not torch.equal(a, b) for a, b in zip(model.policy.state_dict().values(), original.state_dict().values())
    )
    assert changed
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert {"test/kl_ref_noisy", "test/changed_vs_ref_noisy", "test/reference/acc_noisy"} <= set(metrics)
    assert metrics["test/kl_ref_noisy"] > 0


def test_policy_is_an_exact_copy_of_the_reference_before_training(tiny_reference, tmp_path):
    model = AlignmentModule(
        backbone=SeedCNN(channels=4), objective=DPO(), reference_ckpt=str(tiny_reference), log_figures=False
    )
    dm = _synthetic(PreferenceDataModule, cache_dir=str(tmp_path))
    metrics = _trainer(tmp_path).test(model, dm, verbose=False)[0]
    assert metrics["test/kl_ref_noisy"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["test/acc_noisy"] == pytest.approx(metrics["test/reference/acc_noisy"])
    assert metrics["test/changed_vs_ref_noisy"] == 0.0


def test_cached_and_recomputed_reference_give_the_same_training(tiny_reference, tmp_path):
    results = []
    for recompute in (False, True):
        L.seed_everything(0)
        model = AlignmentModule(
            backbone=SeedCNN(channels=4),
            objective=DPO(),
            reference_ckpt=str(tiny_reference),
            recompute_reference=recompute,
            log_figures=False,
        )
        _trainer(tmp_path, max_steps=5, limit_val_batches=0).fit(
            model, _synthetic(PreferenceDataModule, strategy="hard_negative", cache_dir=str(tmp_path))
        )
        results.append(torch.cat([p.detach().flatten() for p in model.policy.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def test_ppo_lite_improves_reward(tiny_reference, tmp_path):
    L.seed_everything(0)
    model = AlignmentModule(
        backbone=SeedCNN(channels=4),
        objective=PPOLite(k=4, ppo_epochs=2),
        reference_ckpt=str(tiny_reference),
        log_figures=False,
    )
    dm = _synthetic(train_on="noisy")
    trainer = _trainer(tmp_path, max_epochs=3, log_every_n_steps=1, logger=L.pytorch.loggers.CSVLogger(tmp_path))
    trainer.fit(model, dm)
    import csv

    rows = list(csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")))
    rewards = [float(r["ppo/reward_mean"]) for r in rows if r.get("ppo/reward_mean")]
    assert {"ppo/clip_fraction", "ppo/kl"} <= set(rows[0])
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4  # sampled labels get right more often
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/acc_noisy"] >= metrics["test/reference/acc_noisy"] - 0.02


def test_objective_needing_reference_without_one_is_refused():
    with pytest.raises(ValueError, match="reference_ckpt"):
        AlignmentModule(objective=DPO())


def test_reference_of_another_architecture_is_refused(tiny_reference, tmp_path):
    model = AlignmentModule(backbone=LeNet(), objective=DPO(), reference_ckpt=str(tiny_reference))
    with pytest.raises(CheckpointError, match="same architecture"):
        _trainer(tmp_path).fit(model, _synthetic(PreferenceDataModule, cache_dir=str(tmp_path)))


def test_missing_reference_names_the_fix(tmp_path):
    model = AlignmentModule(objective=DPO(), reference_ckpt=str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="configs/sft.yaml"):
        _trainer(tmp_path).fit(model, _synthetic(PreferenceDataModule, cache_dir=str(tmp_path)))


def test_pair_objective_on_unpaired_data_is_refused(tiny_reference, tmp_path):
    model = AlignmentModule(backbone=SeedCNN(channels=4), objective=DPO(), reference_ckpt=str(tiny_reference))
    with pytest.raises(ValueError, match="PreferenceDataModule"):
        _trainer(tmp_path).fit(model, _synthetic())


class _NaNAfter(SFT):
    """SFT whose loss turns NaN from the third call on."""

    calls = 0

    def forward(self, logps):
        out = super().forward(logps)
        type(self).calls += 1
        if type(self).calls > 2:
            out.loss = out.loss * float("nan")
        return out


def test_nonfinite_loss_raises_with_the_fix(tmp_path):
    _NaNAfter.calls = 0
    model = AlignmentModule(backbone=SeedCNN(channels=4), objective=_NaNAfter(), log_figures=False)
    with pytest.raises(FloatingPointError, match="nan_policy=skip"):
        _trainer(tmp_path, log_every_n_steps=1).fit(model, _synthetic())


def test_nonfinite_loss_can_be_skipped_and_counted(tmp_path):
    _NaNAfter.calls = 0
    model = AlignmentModule(backbone=SeedCNN(channels=4), objective=_NaNAfter(), nan_policy="skip", log_figures=False)
    _trainer(tmp_path, max_steps=6, limit_val_batches=0).fit(model, _synthetic())
    assert model.skipped_steps > 0
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def test_each_epoch_gets_a_new_permutation_and_new_noise_under_the_trainer(tmp_path):
    # Lightning stops after len(loader) batches without exhausting the iterator; the loader must still
    # advance its epoch, or every epoch would replay epoch 0's order and noise.
    firsts = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                firsts.append(batch["x"][0].clone())

    dm = _synthetic(train_on="noisy", resample_noise=True)
    model = AlignmentModule(backbone=SeedCNN(channels=4), log_figures=False)
    _trainer(tmp_path, max_epochs=3, callbacks=[Spy()], limit_val_batches=0).fit(model, dm)
    assert len(firsts) == 3
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])
