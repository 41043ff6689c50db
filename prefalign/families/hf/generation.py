"""Sampling from a Hugging Face policy directory (``python -m prefalign generate --ckpt DIR``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from prefalign.models.hf import load_tokenizer, require


def is_hf_directory(path: str) -> bool:
    """A ``save_pretrained`` directory: a full model (config.json) or a peft adapter (adapter_config.json)."""
    folder = Path(path)
    return folder.is_dir() and ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file())


def load_hf_policy(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a directory prefalign's ``save_pretrained`` wrote: a full model through transformers,
    or a peft adapter through peft on top of its base model (recorded in ``adapter_config.json``). No remote code."""
    transformers = require("transformers", "generate from a Hugging Face directory")
    folder = Path(path)
    if (folder / "adapter_config.json").is_file():
        peft = require("peft", "generate from a peft adapter directory")
        base_name = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = transformers.AutoModelForCausalLM.from_pretrained(base_name, trust_remote_code=False)
        model = peft.PeftModel.from_pretrained(base, str(folder))
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=False)
    return model.eval(), load_tokenizer(str(folder))


def hf_generate(
    path: str,
    prompts: list[str],
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    device: str,
) -> list[list[str]]:
    """``num_samples`` continuations of each prompt (``model.generate``; temperature 0: greedy), decoded without the prompt."""
    model, tokenizer = load_hf_policy(path)
    model.to(device)
    torch.manual_seed(seed)
    out = []
    for prompt in prompts:  # one prompt at a time: no padding inside the context
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        kwargs = {
            "do_sample": temperature > 0,
            "max_new_tokens": max_new_tokens,
            "num_return_sequences": num_samples,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_k=top_k or 0)
        with torch.no_grad():
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        out.append([tokenizer.decode(g[ids.shape[1] :], skip_special_tokens=True) for g in generated])
    return out
