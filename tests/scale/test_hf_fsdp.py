"""FSDP2 (``fully_shard``) on a Hugging Face model through the real CLI and ``configs/trainer/fsdp.yaml``: two CPU
processes (gloo), the tiny local Llama of ``tests/hf/tiny.py``, against a single-process run with the same global
batch. Lightning's FSDPStrategy refuses CPUs; FSDP2 through ModelParallelStrategy (prefalign's FSDP2Strategy) runs."""

from __future__ import annotations

import json

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


def test_fsdp2_shards_policy_and_frozen_reference_matches_one_process_and_saves_a_whole_model(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model_dir, data_file = tiny_setup(tmp_path)
    fsdp_dir = tmp_path / "fsdp"
    fsdp_dir.mkdir()
    args = [
        *common_args(model_dir, data_file),
        "--config",
        CONFIGS / "trainer/fsdp.yaml",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--data.init_args.batch_size=4",
        "--trainer.strategy.init_args.param_dtype=null",  # fp32 here, to compare with fp32 on one process
        "--trainer.strategy.init_args.activation_checkpointing=true",  # recomputation gives the same numbers
        "--trainer.callbacks+=tests.scale.hf_probes.HFProbe",
    ]
    code, out = run_cli(args, fsdp_dir, timeout=240, **OFFLINE)
    assert code == 0, tail(fsdp_dir)
    assert "Starting with 2 processes" in out
    ranks = probes(fsdp_dir)
    single_run = single_process_run(model_dir, data_file, tmp_path / "single", monkeypatch)
    fsdp_run = fsdp_dir / "runs/hf_dpo/version_0"

    for rank, p in enumerate(ranks):
        assert p["rank"] == rank and p["world_size"] == 2
        # Each decoder layer is a unit (found from _no_split_modules), the root holds the rest; the reference alike.
        assert p["policy_is_fsdp"] and p["reference_is_fsdp"]
        assert p["fsdp_units"] == ["FSDPHFCausalLM", "FSDPLlamaDecoderLayer"]
        assert p["reference_params_in_wrapper"] == 0  # its own shards, not the policy's
        assert p["reference_requires_grad"] == p["reference_has_grad"] == p["reference_params_in_optimizer"] == 0
        assert p["reference_equal_to_file"], "the frozen reference changed"
        assert len(p["steps"]) == STEPS
    for s in range(STEPS):
        rows0, rows1 = ({tuple(r) for r in p["steps"][s]["chosen"]} for p in ranks)
        assert len(rows0) == len(rows1) == 4 and not rows0 & rows1, s

    # Gradients are reduce-scattered (averaged) over the ranks: one process on the union of the ranks' rows
    # takes the same steps.
    single = train_losses(single_run)
    fsdp_mean = [(ranks[0]["steps"][s]["loss"] + ranks[1]["steps"][s]["loss"]) / 2 for s in range(STEPS)]
    assert fsdp_mean == pytest.approx(single, abs=1e-6)
    # Under FSDP every rank evaluates every validation row (a sharded forward is collective): the same metrics.
    fsdp_val, single_val = val_metrics(fsdp_run), val_metrics(single_run)
    assert set(fsdp_val) == set(single_val)
    for key, value in single_val.items():
        assert fsdp_val[key] == pytest.approx(value, abs=1e-5), key

    # The sharded reference cached its log-probs over both ranks (the same number of collective forwards on each).
    assert [p["reference_rows"] for p in ranks] == [8, 8]
    (cache,) = (fsdp_dir / "artifacts/hf_reference").glob("hf-ref-*.pt")
    (single_cache,) = (tmp_path / "single/artifacts/hf_reference").glob("hf-ref-*.pt")
    for key in ("ref_head", "ref_tail"):
        torch.testing.assert_close(torch.load(cache)[key], torch.load(single_cache)[key], atol=1e-5, rtol=0)

    # The whole policy was gathered on rank 0 and written once with save_pretrained: a single process loads it
    # with transformers, as the architecture it was (not the FSDP wrapper class), with the single run's weights.
    assert [len(p["saves"]) for p in ranks] == [1, 0]
    assert json.loads((fsdp_run / "policy/config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    fsdp_policy = AutoModelForCausalLM.from_pretrained(str(fsdp_run / "policy")).state_dict()
    single_policy = AutoModelForCausalLM.from_pretrained(str(single_run / "policy")).state_dict()
    assert set(fsdp_policy) == set(single_policy)
    for key, value in single_policy.items():
        torch.testing.assert_close(fsdp_policy[key], value, atol=1e-5, rtol=0)
    # Lightning's own checkpoint, gathered into one file on rank 0 (the overlay's save_distributed_checkpoint: false).
    assert (fsdp_run / "checkpoints/last.ckpt").is_file()
