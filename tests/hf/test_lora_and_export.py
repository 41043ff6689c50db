"""LoRA through peft (TRL's way: the reference is the policy with its adapters off), save_pretrained round trips and
``python -m prefalign generate`` on the saved directory."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prefalign.cli import main
from prefalign.families.hf import HFCausalLMFamily
from prefalign.models import HFCausalLM
from prefalign.objectives import DPO
from tests.conftest import CONFIGS

peft = pytest.importorskip("peft")
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, vocab, (4, 7), generator=g)
    completion = torch.zeros_like(ids)
    completion[:, 3:] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}


def step(policy: HFCausalLM, b: dict[str, torch.Tensor]) -> None:
    """One SGD step that moves the adapters (B starts at zero)."""
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1.0)
    policy(b["input_ids"]).float().pow(2).mean().backward()
    opt.step()


def test_adapters_off_reference_is_the_base_bit_for_bit_and_dpo_starts_at_ln2(tiny_model):
    from transformers import AutoModelForCausalLM

    policy = HFCausalLM(str(tiny_model), peft=LORA)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # only the adapters train
    reference = policy.load_reference()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    b = batch(policy.config.vocab_size)
    family = HFCausalLMFamily()
    out = DPO(beta=0.1)(family.pair_logps(policy, reference, b))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert out.metrics["rewards/margins"].item() == 0.0  # policy = reference exactly at step 0
    step(policy, b)
    with torch.no_grad():
        expected = base(input_ids=b["input_ids"]).logits
        assert not torch.equal(policy(b["input_ids"]), expected)  # the adapters moved the policy
        assert torch.equal(reference(b["input_ids"]), expected)  # the reference did not move
    assert policy.training  # the reference's forward leaves the policy's mode alone
    assert sum(p.numel() for p in reference.parameters()) == sum(
        p.numel() for p in base.parameters()
    )  # one copy of the weights


def test_save_pretrained_round_trips_through_peft_and_transformers(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    b = batch(100)
    policy = HFCausalLM(str(tiny_model), peft=LORA)
    step(policy, b)
    policy.eval()
    policy.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and not (
        tmp_path / "adapter" / "model.safetensors"
    ).exists()
    loaded = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(tmp_path / "adapter")
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=b["input_ids"]).logits, policy(b["input_ids"]), rtol=0, atol=1e-6)
    full = HFCausalLM(str(tiny_model))
    step(full, b)
    full.eval()
    full.save_pretrained(tmp_path / "full")
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full")).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=b["input_ids"]).logits, full(b["input_ids"]))


def test_lora_fit_from_the_command_line_then_generate(tiny_model, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        "--config",
        str(CONFIGS / "hf_dpo.yaml"),
        "--model_name_or_path",
        str(tiny_model),
        "--dataset_name",
        str(data_files["standard"]),
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.batch_size=8",
        "--model.optimizer.init_args.lr=0.01",
        "--model.backbone.init_args.peft=" + json.dumps(LORA),
    ]
    assert main(args) == 0
    policy_dir = tmp_path / "hf_dpo" / "version_0" / "policy"
    assert (policy_dir / "adapter_config.json").is_file()
    # The adapters-off reference is the fixed base: its log-probs are computed once and cached like a frozen copy's.
    assert len(list((tmp_path / "artifacts" / "hf_reference").glob("hf-ref-*.pt"))) == 1
    out = tmp_path / "samples.jsonl"
    assert (
        main(
            [
                "generate",
                "--ckpt",
                str(policy_dir),
                "--prompt",
                "the cat",
                "--num_samples",
                "2",
                "--max_new_tokens",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["prompt"] == "the cat" and isinstance(r["completion"], str) for r in rows)
