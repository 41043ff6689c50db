"""A tiny local Llama with a locally trained tokenizer, and small TRL-format data files: nothing from the hub."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = (
    "the cat sat on a mat and the dog ran to the red house while birds sang in tall green trees near "
    "blue water where fish swim fast slow big small happy sad good bad yes no maybe today tomorrow"
).split()

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

# Standard rows; the second prompt ends inside a word ("the ca" + "t sat"): tokenized alone and with its
# completion the boundary falls inside a token, which tokenizing the two separately would get wrong.
STANDARD = [
    {"prompt": "the cat sat on", "chosen": " a mat", "rejected": " the dog"},
    {"prompt": "the ca", "chosen": "t sat on a mat", "rejected": "r ran"},
    {"prompt": "birds sang in tall", "chosen": " green trees", "rejected": " blue water where fish swim"},
    {"prompt": "fish swim", "chosen": " fast in blue water", "rejected": " slow"},
    {"prompt": "the dog ran to", "chosen": " the red house", "rejected": " a mat"},
    {"prompt": "happy sad", "chosen": " good bad yes", "rejected": " no"},
    {"prompt": "today", "chosen": " tomorrow maybe", "rejected": " yes no"},
    {"prompt": "the red", "chosen": " house", "rejected": " dog ran to the mat"},
]


def conversational(rows: list[dict]) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in rows
    ]


def implicit(rows: list[dict]) -> list[dict]:
    return [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in rows]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=120,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"),
    )
    tok.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4, trainer=trainer)
    from tokenizers import decoders

    tok.decoder = decoders.Metaspace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model_dir(path: Path, seed: int = 0, chat_template: bool = True, **sizes: int) -> Path:
    """A 2-layer Llama (hidden 32) and its tokenizer, saved with save_pretrained into ``path``; ``sizes`` override the
    config's sizes (``hidden_size=512, num_hidden_layers=6, ...``: the benchmark's larger model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(chat_template)
    torch.manual_seed(seed)
    shape = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        **sizes,
    }
    config = LlamaConfig(
        **shape,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def distinct_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` different standard rows from the tokenizer's words, so every batch's content differs (data order matters)."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.sample(WORDS, rng.randint(1, 5)))
        rows.append(
            {
                "prompt": prompt,
                "chosen": " " + " ".join(rng.sample(WORDS, rng.randint(1, 6))),
                "rejected": " " + " ".join(rng.sample(WORDS, rng.randint(1, 6))),
            }
        )
    return rows


def make_reward_model_dir(path: Path, seed: int = 1, chat_template: bool = True) -> Path:
    """A 2-layer Llama sequence classifier with one label (a reward model, TRL's num_labels=1) and the same
    tokenizer, saved with save_pretrained into ``path``."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = make_tokenizer(chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def prompt_rows(rows: list[dict]) -> list[dict]:
    """Prompt-only rows (TRL's GRPO format) with an extra ``answer`` column (the chosen completion)."""
    return [{"prompt": r["prompt"], "answer": r["chosen"].strip()} for r in rows]


def conversational_prompts(rows: list[dict]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["chosen"].strip()} for r in rows]
