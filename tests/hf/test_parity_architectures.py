"""TRL parity beyond the suite's tiny Llama: other architectures and tokenizer conventions an independent check may bring.

GPT-2 (its own module layout, tied embeddings, a tokenizer without a pad token: EOS pads), Qwen2 with tied embeddings
on conversational data, and a Llama whose tokenizer prepends BOS to every encoding (so the prompt and the prompt +
completion both start with it) on implicit-prompt data.
"""

from __future__ import annotations

import pytest
import torch

from tests.hf.test_parity import KEYS, TOLERANCE, run_prefalign, run_trl
from tests.hf.tiny import STANDARD, conversational, distinct_rows, implicit, make_tokenizer, write_jsonl

pytest.importorskip("trl")


def _tokenizer(kind: str):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    base = make_tokenizer(chat_template=True)
    backend = base.backend_tokenizer
    special = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    if kind == "bos":
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", base.bos_token_id)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, **special, **({} if kind == "nopad" else {"pad_token": "<pad>"})
    )
    tokenizer.chat_template = base.chat_template
    return tokenizer


def _model_dir(path, arch: str, tokenizer):
    import transformers

    torch.manual_seed(0)
    common = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id}
    if arch == "gpt2":
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **common)
        )
    else:
        config_class, model_class = {
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        }[arch]
        config = config_class(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            tie_word_embeddings=arch == "qwen2",
            **common,
        )
        model = model_class(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


CASES = {
    "gpt2_tied_no_pad_token_ipo": ("gpt2", "nopad", "distinct", "ipo"),
    "qwen2_tied_conversational_dpo": ("qwen2", "plain", "conversational", "sigmoid"),
    "llama_bos_implicit_prompt_dpo": ("llama", "bos", "implicit", "sigmoid"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_other_architectures_match_trl(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arch, tokenizer_kind, data, loss_type = CASES[case]
    tokenizer = _tokenizer(tokenizer_kind)
    assert (tokenizer.pad_token is None) == (tokenizer_kind == "nopad")
    if tokenizer_kind == "bos":
        assert tokenizer("the cat").input_ids[0] == tokenizer.bos_token_id
    model_dir = _model_dir(tmp_path / "model", arch, tokenizer)
    rows = {
        "distinct": distinct_rows(16),
        "conversational": conversational(STANDARD) * 2,
        "implicit": implicit(STANDARD) * 2,
    }[data]
    data_file = write_jsonl(rows, tmp_path / "data.jsonl")
    batch_size = 8 if data == "distinct" else 16
    objective = (
        ["--model.objective=prefalign.objectives.IPO", "--model.objective.init_args.tau=0.1"]
        if loss_type == "ipo"
        else ["--model.objective=prefalign.objectives.DPO", "--model.objective.init_args.beta=0.1"]
    )
    theirs = run_trl(model_dir, data_file, loss_type, 0.1, tmp_path / "trl", batch_size=batch_size)
    ours = run_prefalign(model_dir, data_file, objective, tmp_path / "prefalign", batch_size=batch_size)
    assert len(theirs) == len(ours) == 3
    worst = {k: max(abs(t[k] - o[k]) for t, o in zip(theirs, ours)) for k in KEYS}
    print(f"{case}: max |TRL - prefalign| over 3 steps: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    for k in KEYS:
        assert worst[k] <= TOLERANCE[k], (k, [t[k] for t in theirs], [o[k] for o in ours])
    assert ours[2]["loss"] != ours[0]["loss"]
