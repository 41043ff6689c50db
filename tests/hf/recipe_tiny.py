"""Tiny versions of the offline recipes' configs (synthetic text, a 2-layer Llama, a few steps), written into a folder."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import CONFIGS

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}
TEXT = {"source": "synthetic", "synthetic_chars": 20_000}


def tiny_recipes(folder: Path) -> tuple[Path, Path]:
    """(pretrain, dpo) configs: the shipped recipes, shrunk to seconds on synthetic text, all paths inside ``folder``."""
    pretrain = yaml.safe_load((CONFIGS / "hf_shakespeare_pretrain.yaml").read_text())
    dpo = yaml.safe_load((CONFIGS / "hf_shakespeare_dpo.yaml").read_text())
    pretrain["trainer"].update(max_epochs=1, log_every_n_steps=1, enable_progress_bar=False)
    pretrain["trainer"]["logger"]["init_args"]["save_dir"] = str(folder / "runs")
    backbone = pretrain["model"]["backbone"]["init_args"]
    backbone.update(config=TINY_LLAMA, tokenizer=str(folder / "tokenizer"), tokenizer_text=dict(TEXT), vocab_size=300)
    pretrain["model"]["export_path"] = str(folder / "base")
    pretrain["model"]["optimizer"]["init_args"]["lr"] = 0.01
    pretrain["data"]["init_args"].update(
        TEXT,
        block_size=16,
        batch_size=8,
        steps_per_epoch=4,
        max_val_windows=8,
        prompt_length=4,
        eval_prompts=4,
        eval_new_tokens=6,
    )
    dpo["reference_recipe"] = str(folder / "pretrain.yaml")
    dpo["trainer"].update(max_epochs=1, log_every_n_steps=1, enable_progress_bar=False)
    dpo["trainer"]["logger"]["init_args"]["save_dir"] = str(folder / "runs")
    dpo["model"]["backbone"]["init_args"]["model_name_or_path"] = str(folder / "base")
    dpo["data"]["init_args"].update(
        TEXT,
        num_prompts=24,
        prompt_length=4,
        response_length=6,
        block_size=16,
        max_val_windows=8,
        eval_prompts=4,
        batch_size=4,
        eval_batch_size=8,
        cache_dir=str(folder / "cache"),
    )
    paths = folder / "pretrain.yaml", folder / "dpo.yaml"
    for path, cfg in zip(paths, (pretrain, dpo)):
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return paths


def tiny_grpo_recipe(folder: Path) -> Path:
    """The shipped GRPO recipe, shrunk the same way (its base model: :func:`tiny_recipes`' pretraining config)."""
    pretrain, _ = tiny_recipes(folder)
    grpo = yaml.safe_load((CONFIGS / "hf_shakespeare_grpo.yaml").read_text())
    grpo["reference_recipe"] = str(pretrain)
    grpo["trainer"].update(max_epochs=1, log_every_n_steps=1, enable_progress_bar=False)
    grpo["trainer"]["logger"]["init_args"]["save_dir"] = str(folder / "runs")
    grpo["model"]["backbone"]["init_args"]["model_name_or_path"] = str(folder / "base")
    grpo["model"]["family"]["init_args"]["max_new_tokens"] = 6
    grpo["model"]["objective"]["init_args"]["k"] = 4
    grpo["data"]["init_args"].update(
        TEXT,
        num_prompts=6,
        prompt_length=4,
        eval_new_tokens=6,
        block_size=16,
        max_val_windows=8,
        eval_prompts=4,
        batch_size=2,
        eval_batch_size=8,
    )
    path = folder / "grpo.yaml"
    path.write_text(yaml.safe_dump(grpo, sort_keys=False))
    return path
