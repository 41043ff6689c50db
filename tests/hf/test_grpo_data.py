"""Prompt-only data in TRL's GRPO formats: tokenized as TRL's GRPOTrainer tokenizes prompts, left-padded in batches."""

from __future__ import annotations

import pytest
import torch

from prefalign.data.hf import TRLPromptDataModule
from prefalign.data.hf.formats import check_prompt_columns
from prefalign.models.hf import load_tokenizer
from tests.hf.tiny import STANDARD, conversational_prompts, prompt_rows, write_jsonl


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_prompts_tokenized_as_trl_and_left_padded(fmt, tiny_model, tmp_path):
    rows = prompt_rows(STANDARD) if fmt == "standard" else conversational_prompts(STANDARD)
    data = TRLPromptDataModule(str(write_jsonl(rows, tmp_path / "p.jsonl")), batch_size=3)
    tok = load_tokenizer(str(tiny_model))
    data.prepare(tok)
    prompts = [r["prompt"] for r in rows]
    # TRL 1.16 GRPOTrainer._tokenize_prompts: the tokenizer on text; the chat template with the generation prompt.
    if fmt == "standard":
        expected = tok(text=prompts)["input_ids"]
    else:
        expected = tok.apply_chat_template(
            conversation=prompts, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert tok.decode(expected[0]) == "<|user|> the cat sat on</s><|assistant|> "
    assert data.conversational == (fmt == "conversational")
    batch = next(iter(data._loader("train", train=False)))
    assert set(batch) == {"prompt_ids", "prompt_mask", "row"} and batch["row"].tolist() == [0, 1, 2]
    for i in range(3):
        n = len(expected[i])
        assert batch["prompt_mask"][i].sum() == n and batch["prompt_mask"][i, -n:].all()  # left padding
        assert batch["prompt_ids"][i, -n:].tolist() == list(expected[i])
        assert (batch["prompt_ids"][i, :-n] == tok.pad_token_id).all()
    assert batch["prompt_ids"].shape[1] == max(len(e) for e in expected[:3])  # trimmed to the batch's longest
    got_prompts, columns = data.rows([4, 0])
    assert got_prompts == [prompts[4], prompts[0]] and columns == {"answer": ["the red house", "a mat"]}


def test_validation_rows_follow_training_rows_in_the_table(tiny_model, tmp_path):
    data = TRLPromptDataModule(str(write_jsonl(prompt_rows(STANDARD), tmp_path / "p.jsonl")), val_fraction=0.25)
    data.prepare(load_tokenizer(str(tiny_model)))
    train, val = data.splits["train"]["row"], data.splits["val"]["row"]
    assert len(train) == 6 and torch.equal(val, torch.tensor([6, 7]))
    assert sorted(data.table["prompt"]) == sorted(r["prompt"] for r in STANDARD)


def test_missing_prompt_column_names_the_accepted_formats():
    with pytest.raises(ValueError) as e:
        check_prompt_columns(["question", "answer"])
    assert str(e.value).startswith(
        "the dataset lacks the column prompt (it has: answer, question); accepted TRL prompt-only"
    )
    assert "conversational {prompt: [{role, content}, ...]}" in str(e.value)
