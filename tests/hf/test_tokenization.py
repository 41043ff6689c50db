"""Tokenization and batches equal TRL 1.16's own: DPOTrainer's prepared dataset and DataCollatorForPreference."""

from __future__ import annotations

import pytest
import torch

from prefalign.data.hf import TRLPreferenceDataModule
from prefalign.models.hf import load_tokenizer
from tests.hf.tiny import STANDARD

trl = pytest.importorskip("trl")


def trl_prepared(model_dir, data_file, max_length=1024):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir="unused", report_to="none", use_cpu=True, max_length=max_length, save_strategy="no")
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model_dir)),
        args=args,
        train_dataset=load_dataset("json", data_files=str(data_file))["train"],
        processing_class=load_tokenizer(str(model_dir)),
    )
    return trainer


@pytest.mark.parametrize("kind", ["standard", "conversational", "implicit"])
def test_tokenized_rows_and_batches_equal_trls(kind, tiny_model, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = trl_prepared(tiny_model, data_files[kind])
    theirs = trainer.train_dataset
    dm = TRLPreferenceDataModule(str(data_files[kind]), batch_size=16)
    dm.tokenizer = load_tokenizer(str(tiny_model))
    from datasets import load_dataset

    ours = dm.tokenize_dataset(load_dataset("json", data_files=str(data_files[kind]))["train"])
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert ours[column] == theirs[column], column
    # The collated batch (TRL's layout: chosen rows then rejected rows, right-padded) is TRL's collator's.
    dm.prepare(dm.tokenizer)
    batch = next(iter(dm._loader("train", train=False)))
    expected = trainer.data_collator([theirs[i] for i in range(16)])
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(batch[key], expected[key]), key


def test_a_prompt_ending_inside_a_token_is_split_where_trl_splits_it(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    row = STANDARD[1]  # "the ca" + "t sat on a mat": "cat" is one token
    alone = tokenizer(row["prompt"])["input_ids"]
    whole = tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"]
    assert whole[: len(alone)] != alone  # tokenizing prompt and completion separately would give other tokens
    dm = TRLPreferenceDataModule("unused.jsonl")
    dm.tokenizer = tokenizer
    from datasets import Dataset

    out = dm.tokenize_dataset(Dataset.from_list([row]))
    assert out[0]["prompt_ids"] + out[0]["chosen_ids"] == whole  # the training sequence is the text tokenized whole
    assert out[0]["chosen_ids"][-1] == tokenizer.eos_token_id  # EOS appended as text, as TRL does


def test_prompts_that_fill_max_length_are_dropped_and_counted(tiny_model, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer = load_tokenizer(str(tiny_model))
    lengths = [len(tokenizer(r["prompt"])["input_ids"]) for r in STANDARD]
    max_length = sorted(lengths)[len(lengths) // 2]
    theirs = trl_prepared(tiny_model, data_files["standard"], max_length=max_length).train_dataset
    dm = TRLPreferenceDataModule(str(data_files["standard"]), max_length=max_length)
    dm.prepare(tokenizer)
    assert len(dm.splits["train"]["chosen_ids"]) == len(theirs) < 16
    assert dm.dropped == 16 - len(theirs) and dm.mining_stats["data/dropped_rows"] == dm.dropped
    assert int(dm.splits["train"]["chosen_length"].max()) <= max_length
