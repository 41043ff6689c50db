"""The real CLI under DDP: two CPU processes (gloo) started by Lightning from ``python -m prefalign``."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from prefalign.checkpoint import load_weights
from prefalign.cli import main
from prefalign.data.datamodules import NoisyMNISTDataModule
from prefalign.models.loading import load_model
from tests.conftest import CONFIGS, SEED_DPO_VALIDATING, SYNTHETIC_ARGS
from tests.scale._run import run_cli, tail

TRAIN, TEST, VAL = 600, 201, 100  # an odd test set: two ranks get 101 and 100 images, none counted twice


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ddp_two_processes_shard_train_share_mining_and_reduce_test_metrics_exactly(
    tmp_path, tiny_reference, monkeypatch
):
    reference_sha = _sha(tiny_reference)
    args = [
        "fit",
        "--config",
        CONFIGS / "seed_dpo.yaml",
        "--config",
        CONFIGS / "trainer/ddp.yaml",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        SEED_DPO_VALIDATING,  # validation is under test
        "--data.class_path=tests.scale.probes.ProbedPreferenceDataModule",
        *SYNTHETIC_ARGS,
        f"--data.init_args.synthetic_size=[{TRAIN}, {TEST}]",
        f"--data.init_args.val_size={VAL}",
        "--data.init_args.strategy=hard_negative",  # a pair for every training image: 500 pairs, 250 per rank
        "--model.backbone.channels=4",
        f"--model.reference_ckpt={tiny_reference}",
        "--trainer.callbacks+=tests.scale.probes.DDPProbe",
    ]
    code, out = run_cli(args, tmp_path, timeout=240)
    assert code == 0, tail(tmp_path)
    assert "Starting with 2 processes" in out
    run = tmp_path / "runs/seed_dpo/version_0"
    results = json.loads((run / "results_test.json").read_text())["metrics"]

    # What each rank saw (written by DDPProbe inside the two processes).
    probes = [json.loads((tmp_path / f"probe/ddp-rank{r}.json").read_text()) for r in (0, 1)]
    for rank, p in enumerate(probes):
        assert p["rank"] == rank and p["world_size"] == 2
        assert p["policy_is_ddp_wrapped"] and not p["reference_is_ddp"] and p["reference_params_in_ddp"] == 0
        assert (
            p["reference_requires_grad"] == 0
            and p["reference_has_grad"] == 0
            and p["reference_grads_after_backward"] == 0
        )
        assert p["reference_equal_to_file"], "the frozen reference changed in memory"
        assert not p["policy_equal_to_reference"], "the policy did not train"
        assert p["pairs"] == TRAIN - VAL
    # Each rank trained on its own half of the pairs (epoch 0), together all of them once.
    shard0, shard1 = (set(p["train_fingerprints"]) for p in probes)
    assert len(probes[0]["train_fingerprints"]) == len(shard0) == (TRAIN - VAL) // 2 == len(shard1)
    assert not shard0 & shard1
    # Test metrics: every test image counted exactly once across the ranks, and rank zero plotted all of them.
    assert [p["test_samples"] for p in probes] == [101, 100]
    assert probes[0]["calibration_samples"]["test calibration (noisy)"] == TEST
    assert probes[0]["calibration_samples"]["val calibration (clean)"] == VAL
    # Data prepared once per node; pairs mined once (rank 0), read from the cache by rank 1.
    markers = sorted(p.name.split("-pid")[0] for p in (tmp_path / "probe").iterdir() if "-pid" in p.name)
    assert markers == ["mine-rank0", "prepare_data-rank0"]
    assert len(list((tmp_path / "artifacts/pairs").glob("pairs-*.pt"))) == 1
    # Evaluation figures as PNGs in the run folder (CSV logger).
    assert {"val_confusion_noisy", "test_calibration_clean", "data_mined_pairs"} <= {
        p.name.rsplit("_step", 1)[0] for p in (run / "images").glob("*.png")
    }

    # The reference file is untouched; the saved policy differs from it.
    assert _sha(tiny_reference) == reference_sha
    policy_payload, reference_payload = load_weights(run / "policy.pt"), load_weights(tiny_reference)
    assert any(not torch.equal(v, reference_payload["state_dict"][k]) for k, v in policy_payload["state_dict"].items())

    # Single-process evaluation of the saved policy on the same test split gives the DDP run's accuracy exactly.
    dm = NoisyMNISTDataModule(source="synthetic", synthetic_size=(TRAIN, TEST), val_size=VAL)
    dm.setup("test")
    test = dm.splits["test"]
    policy = load_model(run / "policy.pt").eval()
    with torch.no_grad():
        for view in ("clean", "noisy"):
            correct = int((policy(test[f"x_{view}"]).argmax(1) == test["y"]).sum())
            assert results[f"test/acc_{view}"] == pytest.approx(correct / TEST, abs=1e-6), view

    # And the single-process CLI on the saved checkpoint reproduces every test metric of the DDP run.
    monkeypatch.chdir(tmp_path)
    main(
        [
            "test",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
            "--trainer.devices=1",
            "--trainer.strategy=auto",
            "--trainer.callbacks=[]",
            "--model.log_figures=false",
        ]
    )
    single = json.loads((tmp_path / "runs/seed_dpo/version_1/results_test.json").read_text())["metrics"]
    assert set(single) == set(results)
    for key, value in results.items():
        assert single[key] == pytest.approx(value, abs=1e-6), key
