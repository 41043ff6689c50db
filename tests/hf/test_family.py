"""The HF family's log-probs by hand, pretraining windows, unpaired data (KTO) and validation on a held-out fraction."""

from __future__ import annotations

import csv

import torch
import torch.nn.functional as F

from prefalign.cli import main
from prefalign.families.hf import HFCausalLMFamily
from prefalign.models import HFCausalLM
from tests.conftest import CONFIGS
from tests.hf.tiny import STANDARD, write_jsonl


def by_hand(model: HFCausalLM, ids: torch.Tensor, start: int, stop: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t in [start, stop), from the model's logits."""
    with torch.no_grad():
        logp = F.log_softmax(model(ids[None]).float()[0], -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(start, stop))


def test_pair_logps_sum_the_completion_tokens_only(tiny_model):
    model = HFCausalLM(str(tiny_model))
    ids = torch.tensor([[7, 8, 9, 10, 11, 3], [7, 8, 12, 13, 14, 15], [20, 21, 22, 23, 3, 3], [20, 21, 24, 3, 3, 3]])
    attention = (torch.arange(6) < torch.tensor([[5], [6], [4], [3]])).long()
    completion = attention.clone()
    completion[:, :2] = 0  # two prompt tokens per row
    batch = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
    pair = HFCausalLMFamily().pair_logps(model, model, batch)
    expected = [by_hand(model, ids[i], 2, int(attention[i].sum())) for i in range(4)]
    torch.testing.assert_close(pair.policy_chosen, torch.tensor(expected[:2]))
    torch.testing.assert_close(pair.policy_rejected, torch.tensor(expected[2:]))
    torch.testing.assert_close(pair.chosen_length, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(pair.rejected_length, torch.tensor([2.0, 1.0]))
    mean = HFCausalLMFamily().pair_logps(model, None, batch, length_normalized=True)
    torch.testing.assert_close(mean.policy_chosen, torch.tensor(expected[:2]) / torch.tensor([3.0, 4.0]))


def test_pretraining_windows_score_every_token_after_the_first(tiny_model):
    model = HFCausalLM(str(tiny_model))
    tokens = torch.tensor([[7, 8, 9, 10, 11], [12, 13, 14, 15, 16]])
    pair = HFCausalLMFamily().pair_logps(model, None, {"tokens": tokens})
    assert pair.policy_rejected is None and pair.reference_chosen is None
    torch.testing.assert_close(pair.policy_chosen, torch.tensor([by_hand(model, t, 1, 5) for t in tokens]))


def test_kto_on_unpaired_data_and_validation_on_a_held_out_fraction(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [
        {"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
        for r in STANDARD * 2
        for side in ("chosen", "rejected")
    ]
    data = write_jsonl(rows, tmp_path / "unpaired.jsonl")
    args = [
        "fit",
        "--config",
        str(CONFIGS / "hf_dpo.yaml"),
        "--model_name_or_path",
        str(tiny_model),
        "--dataset_name",
        str(data),
        "--trainer.max_steps=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.batch_size=8",
        "--data.init_args.val_fraction=0.25",
        "--model.objective=prefalign.objectives.KTO",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader((tmp_path / "hf_dpo" / "version_0" / "metrics.csv").open()))
    train = [r for r in rows if r.get("train/loss")]
    assert len(train) == 2 and all(r["train/rewards/chosen"] and r["train/logps/rejected"] for r in train)
    val = [r for r in rows if r.get("val/loss")]
    assert val and float(val[-1]["val/loss"]) > 0 and val[-1]["val/rewards/margins"]
    assert float(rows[0]["data/train_rows"]) == 24  # 32 unpaired rows, a quarter held out
