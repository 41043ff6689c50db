"""A Hugging Face model under DDP through the real CLI: two CPU processes (gloo), the tiny local Llama of
``tests/hf/tiny.py``, against a single-process run with the same global batch."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import CONFIGS
from tests.scale._run import run_cli, tail

pytest.importorskip("transformers")
pytest.importorskip("datasets")

from tests.scale.hf_runs import (  # noqa: E402
    OFFLINE,
    STEPS,
    common_args,
    probes,
    single_process_run,
    tiny_setup,
    train_losses,
    val_metrics,
)


def test_ddp_hf_shards_batches_as_accelerate_caches_reference_once_and_matches_one_process(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model_dir, data_file = tiny_setup(tmp_path)
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    args = [
        *common_args(model_dir, data_file),
        "--config",
        CONFIGS / "trainer/ddp.yaml",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--data.init_args.batch_size=4",
        "--trainer.callbacks+=tests.scale.hf_probes.HFProbe",
    ]
    code, out = run_cli(args, ddp_dir, timeout=240, **OFFLINE)
    assert code == 0, tail(ddp_dir)
    assert "Starting with 2 processes" in out
    ranks = probes(ddp_dir)
    single_run = single_process_run(model_dir, data_file, tmp_path / "single", monkeypatch)
    ddp_run = ddp_dir / "runs/hf_dpo/version_0"

    for rank, p in enumerate(ranks):
        assert p["rank"] == rank and p["world_size"] == 2
        assert p["policy_is_ddp_wrapped"] and p["reference_params_in_wrapper"] == 0
        assert p["reference_requires_grad"] == p["reference_has_grad"] == p["reference_params_in_optimizer"] == 0
        assert p["reference_equal_to_file"], "the frozen reference changed"
        assert len(p["steps"]) == STEPS
    # Every step the two ranks trained on different rows; each epoch-0 row once over both ranks and both steps.
    for s in range(STEPS):
        rows0, rows1 = ({tuple(r) for r in p["steps"][s]["chosen"]} for p in ranks)
        assert len(rows0) == len(rows1) == 4 and not rows0 & rows1, s
    epoch0 = [tuple(r) for p in ranks for s in range(2) for r in p["steps"][s]["chosen"]]
    assert len(set(epoch0)) == len(epoch0) == 16

    # The DDP loss of a step is the mean of the ranks' per-pair means, and DDP averages their gradients: the same
    # loss and the same update as one process on the union of the two ranks' rows, which is its own batch (the
    # accelerate sharding of the seeded permutation), so every step matches, after two updates too.
    single = train_losses(single_run)
    assert len(single) == STEPS
    ddp_mean = [(ranks[0]["steps"][s]["loss"] + ranks[1]["steps"][s]["loss"]) / 2 for s in range(STEPS)]
    assert ddp_mean == pytest.approx(single, abs=1e-6)
    assert train_losses(ddp_run) == pytest.approx([ranks[0]["steps"][s]["loss"] for s in range(STEPS)], abs=1e-6)
    # Validation (3 rows, 2 + 1 over the ranks) is summed over ranks before dividing: the single-process numbers.
    ddp_val, single_val = val_metrics(ddp_run), val_metrics(single_run)
    assert set(ddp_val) == set(single_val) and "val/loss" in ddp_val
    for key, value in single_val.items():
        assert ddp_val[key] == pytest.approx(value, abs=1e-5), key

    # Reference log-probs: each rank ran the reference on its half of the 16 rows, rank 0 wrote one file, both ranks
    # read the same values, equal to the single-process cache (same key: the batch size is not part of it).
    assert [p["reference_rows"] for p in ranks] == [8, 8]
    assert ranks[0]["ref_head"] == ranks[1]["ref_head"] and ranks[0]["ref_tail"] == ranks[1]["ref_tail"]
    (cache,) = (ddp_dir / "artifacts/hf_reference").glob("hf-ref-*.pt")
    (single_cache,) = (tmp_path / "single/artifacts/hf_reference").glob("hf-ref-*.pt")
    assert cache.name == single_cache.name
    ddp_values, single_values = torch.load(cache), torch.load(single_cache)
    for key in ("ref_head", "ref_tail"):
        torch.testing.assert_close(ddp_values[key], single_values[key], atol=1e-5, rtol=0)
        assert torch.equal(ddp_values[key], torch.tensor(ranks[0][key]))

    # The policy is written once, by rank 0, and loads back with transformers: the single-process run's weights.
    assert [len(p["saves"]) for p in ranks] == [1, 0]
    ddp_policy = AutoModelForCausalLM.from_pretrained(str(ddp_run / "policy")).state_dict()
    single_policy = AutoModelForCausalLM.from_pretrained(str(single_run / "policy")).state_dict()
    start = AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict()
    for key, value in single_policy.items():
        torch.testing.assert_close(ddp_policy[key], value, atol=1e-5, rtol=0)
    assert any(not torch.equal(v, start[k]) for k, v in ddp_policy.items()), "the policy did not train"
