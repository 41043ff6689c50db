"""A Hugging Face model under DDP through the real CLI: two CPU processes (gloo), the tiny local Llama of
``tests/hf/tiny.py``, against a single-process run with the same global batch."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from prefalign.cli import main
from tests.conftest import CONFIGS
from tests.scale._run import run_cli, tail

pytest.importorskip("transformers")
pytest.importorskip("datasets")

from tests.hf.tiny import distinct_rows, make_model_dir, write_jsonl  # noqa: E402

# 19 rows, 3 held out (val_fraction 0.15): 16 training rows are 2 steps per epoch of 2 ranks x 4 pairs, or of 1 x 8;
# 3 validation rows split 2 + 1 over the ranks, so a mean of per-rank means would differ from the true mean.
ROWS, VAL_FRACTION, STEPS = 19, 0.15, 3


def common(model_dir, data_file) -> list[str]:
    return [
        "fit",
        "--config",
        CONFIGS / "hf_dpo.yaml",
        "--model_name_or_path",
        model_dir,
        "--dataset_name",
        data_file,
        f"--trainer.max_steps={STEPS}",  # across an epoch boundary: epoch 1 draws a new permutation
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0",
        f"--data.init_args.val_fraction={VAL_FRACTION}",
        "--model.optimizer.init_args.lr=0.001",
    ]


def train_losses(run) -> list[float]:
    rows = csv.DictReader((run / "metrics.csv").open())
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def val_metrics(run) -> dict[str, float]:
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/loss")]
    assert len(rows) == 1  # one validation, at the end of epoch 0
    return {k: float(v) for k, v in rows[0].items() if k.startswith("val/") and v}


def test_ddp_hf_shards_batches_as_accelerate_caches_reference_once_and_matches_one_process(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model_dir = make_model_dir(tmp_path / "model")
    data_file = write_jsonl(distinct_rows(ROWS, seed=1), tmp_path / "prefs.jsonl")
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir(), single_dir.mkdir()

    args = [
        *common(model_dir, data_file),
        "--config",
        CONFIGS / "trainer/ddp.yaml",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--data.init_args.batch_size=4",
        "--trainer.callbacks+=tests.scale.hf_probes.HFProbe",
    ]
    code, out = run_cli(args, ddp_dir, timeout=240, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert code == 0, tail(ddp_dir)
    assert "Starting with 2 processes" in out
    probes = [json.loads((ddp_dir / f"probe/rank{r}.json").read_text()) for r in (0, 1)]

    # The single-process run: batch 8 = 2 ranks x 4, in-process.
    monkeypatch.chdir(single_dir)
    assert main([*map(str, common(model_dir, data_file)), "--data.init_args.batch_size=8"]) == 0
    ddp_run, single_run = ddp_dir / "runs/hf_dpo/version_0", single_dir / "runs/hf_dpo/version_0"

    for rank, p in enumerate(probes):
        assert p["rank"] == rank and p["world_size"] == 2
        assert p["policy_is_ddp_wrapped"] and p["reference_params_in_wrapper"] == 0
        assert p["reference_requires_grad"] == p["reference_has_grad"] == p["reference_params_in_optimizer"] == 0
        assert p["reference_equal_to_file"], "the frozen reference changed"
        assert len(p["steps"]) == STEPS
    # Every step the two ranks trained on different rows; each epoch-0 row once over both ranks and both steps.
    for s in range(STEPS):
        rows0, rows1 = ({tuple(r) for r in p["steps"][s]["chosen"]} for p in probes)
        assert len(rows0) == len(rows1) == 4 and not rows0 & rows1, s
    epoch0 = [tuple(r) for p in probes for s in range(2) for r in p["steps"][s]["chosen"]]
    assert len(set(epoch0)) == len(epoch0) == 16

    # The DDP loss of a step is the mean of the ranks' per-pair means, and DDP averages their gradients: the same
    # loss and the same update as one process on the union of the two ranks' rows, which is its own batch (the
    # accelerate sharding of the seeded permutation), so every step matches, after two updates too.
    single = train_losses(single_run)
    assert len(single) == STEPS
    ddp_mean = [(probes[0]["steps"][s]["loss"] + probes[1]["steps"][s]["loss"]) / 2 for s in range(STEPS)]
    assert ddp_mean == pytest.approx(single, abs=1e-6)
    assert train_losses(ddp_run) == pytest.approx([probes[0]["steps"][s]["loss"] for s in range(STEPS)], abs=1e-6)
    # Validation (3 rows, 2 + 1 over the ranks) is summed over ranks before dividing: the single-process numbers.
    ddp_val, single_val = val_metrics(ddp_run), val_metrics(single_run)
    assert set(ddp_val) == set(single_val) and "val/loss" in ddp_val
    for key, value in single_val.items():
        assert ddp_val[key] == pytest.approx(value, abs=1e-5), key

    # Reference log-probs: each rank ran the reference on its half of the 16 rows, rank 0 wrote one file, both ranks
    # read the same values, equal to the single-process cache.
    assert [p["reference_rows"] for p in probes] == [8, 8]
    assert probes[0]["ref_head"] == probes[1]["ref_head"] and probes[0]["ref_tail"] == probes[1]["ref_tail"]
    (cache,) = (ddp_dir / "artifacts/hf_reference").glob("hf-ref-*.pt")
    (single_cache,) = (single_dir / "artifacts/hf_reference").glob("hf-ref-*.pt")
    assert cache.name == single_cache.name  # same key: same model files, data and truncation
    ddp_values, single_values = torch.load(cache), torch.load(single_cache)
    for key in ("ref_head", "ref_tail"):
        torch.testing.assert_close(ddp_values[key], single_values[key], atol=1e-5, rtol=0)
        assert torch.equal(ddp_values[key], torch.tensor(probes[0][key]))

    # The policy is written once, by rank 0, and loads back with transformers: the single-process run's weights.
    assert [len(p["saves"]) for p in probes] == [1, 0]
    ddp_policy = AutoModelForCausalLM.from_pretrained(str(ddp_run / "policy"))
    single_policy = AutoModelForCausalLM.from_pretrained(str(single_run / "policy"))
    start = AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict()
    for key, value in single_policy.state_dict().items():
        torch.testing.assert_close(ddp_policy.state_dict()[key], value, atol=1e-5, rtol=0)
    assert any(not torch.equal(v, start[k]) for k, v in ddp_policy.state_dict().items()), "the policy did not train"
