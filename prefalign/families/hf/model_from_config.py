"""HFCausalLMFromConfig: a Hugging Face causal LM built from a config, with a locally trained tokenizer (no hub).

What pretraining from scratch starts from: ``AutoConfig.for_model(model_type, **config)`` with the tokenizer's
vocabulary size and special-token ids filled in, then ``AutoModelForCausalLM.from_config`` (random weights, seeded by
``seed_everything``). Exported with ``save_pretrained``, the trained model is an ordinary directory that
:class:`~prefalign.models.HFCausalLM` (and transformers) load unchanged: the aligning recipe starts from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefalign.models.hf import HFCausalLM, require


def _training_split(text: dict[str, Any]) -> str:
    """The training split of the text that a data module with these settings reads (the tokenizer must not see the
    validation split)."""
    from prefalign.data.text.datamodule import CharTextDataModule

    data = CharTextDataModule(**text)
    data.prepare_data()  # the corpus is fetched and verified on first use
    return data.split_text(data.load_text())["train"]


class HFCausalLMFromConfig(HFCausalLM):
    """A causal LM of any transformers architecture, built from its config with random weights.

    Args:
        config: the transformers config's arguments, with ``model_type`` (default ``llama``), e.g. ``{hidden_size:
            128, num_hidden_layers: 3, num_attention_heads: 4, intermediate_size: 384}``. ``vocab_size`` and the
            BOS/EOS/pad ids come from the tokenizer.
        tokenizer: a tokenizer directory (``save_pretrained`` layout). When it is missing and ``tokenizer_text`` is
            given, a byte-level BPE is trained there first (:mod:`prefalign.data.hf.bpe_training`).
        tokenizer_text: the text to train the tokenizer on, as the text data module's arguments (``source``,
            ``text_file``, ``data_dir``, ``val_fraction``, ...): only its training split is read.
        vocab_size: the trained tokenizer's vocabulary size.
        dtype: the weights' dtype.
    """

    def __init__(
        self,
        config: dict[str, Any],
        tokenizer: str,
        tokenizer_text: dict[str, Any] | None = None,
        vocab_size: int = 2048,
        dtype: str = "float32",
    ) -> None:
        nn.Module.__init__(self)  # not HFCausalLM's: there are no pretrained weights to load
        transformers = require("transformers", "HFCausalLMFromConfig")
        folder = Path(tokenizer)
        if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
            if tokenizer_text is None:
                raise FileNotFoundError(
                    f"tokenizer not found: {tokenizer} holds no tokenizer; set model.backbone.init_args.tokenizer to a "
                    "tokenizer directory, or give model.backbone.init_args.tokenizer_text to train one there."
                )
            from prefalign.data.hf.bpe_training import ensure_bpe_tokenizer

            ensure_bpe_tokenizer(folder, lambda: _training_split(tokenizer_text), vocab_size)
        self.folder = folder
        self.model_name_or_path = str(folder)
        self.dtype_name = dtype
        self.uses_peft = False
        tok = self.load_tokenizer()
        kwargs = dict(config)
        model_type = kwargs.pop("model_type", "llama")
        # The tokenizer decides the ids; a config that names its own is overridden rather than silently mismatched.
        kwargs.update(
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model_config = transformers.AutoConfig.for_model(model_type, **kwargs)
        self.model = transformers.AutoModelForCausalLM.from_config(model_config, dtype=getattr(torch, dtype))
        self.model.train()
        self.init_args = {"config": dict(config), "tokenizer": str(folder), "dtype": dtype}

    def load_reference(self) -> nn.Module:
        raise ValueError(
            "a model built from a config has no pretrained reference: pretrain it (objective SFT), then align the "
            "exported directory with prefalign.models.HFCausalLM."
        )


__all__ = ["HFCausalLMFromConfig"]
