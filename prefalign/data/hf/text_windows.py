"""HFTextDataModule: a text corpus in token windows for pretraining a Hugging Face causal LM, tokenized by the model.

The text, its split and the windows are :class:`~prefalign.data.text.CharTextDataModule`'s (the bundled Shakespeare,
first 90% train, last 10% validate); only the tokenizer differs: the model's own (a transformers tokenizer), handed
over by :class:`~prefalign.families.hf.HFCausalLMFamily` through :meth:`HFTextDataModule.prepare` before training.
Batches are ``{"tokens": [B, T + 1]}``, which the HF family trains on as next-token prediction.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from prefalign.data.text.datamodule import CharTextDataModule


class HFTextTokenizer:
    """A transformers tokenizer behind the interface the text data modules use (``encode`` text to a long tensor,
    ``decode`` ids to text, ``len``). No special tokens are added: a window is plain text."""

    unit = "token"
    name = "hf"

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    def encode(self, text: str, what: str = "text") -> Tensor:
        return torch.tensor(self.hf(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def decode(self, ids: Any) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def __len__(self) -> int:
        return len(self.hf)

    def same_as(self, other: Any) -> bool:
        return isinstance(other, HFTextTokenizer) and other.hf is self.hf


class HFTextDataModule(CharTextDataModule):
    """Token windows of a text corpus for a Hugging Face causal LM (:class:`~prefalign.models.HFCausalLM` or
    :class:`~prefalign.families.hf.HFCausalLMFromConfig`), in the model's tokens.

    Training: ``steps_per_epoch`` batches of ``batch_size`` windows of ``block_size + 1`` tokens at random offsets of
    the training split (fresh offsets every epoch). Validation and test: consecutive windows of the validation split
    (the LM loss), and ``eval_prompts`` held-out prompts of ``prompt_length`` tokens with the ``eval_new_tokens``
    tokens of real text after each (what :class:`~prefalign.families.hf.HFTextFamily` samples and judges).

    Args:
        source: ``shakespeare`` (the verified bundled corpus), ``file`` (``text_file``) or ``synthetic`` (tests).
        block_size: tokens per window (plus one: the first token is only context).
        (other arguments: see :class:`~prefalign.data.text.CharTextDataModule`)
    """

    # What a reference recipe run for this data is given, so the base model learns the same text and split.
    reference_data_keys = ("source", "text_file", "synthetic_chars", "val_fraction", "data_dir")

    def __init__(
        self,
        source: Literal["shakespeare", "file", "synthetic"] = "shakespeare",
        text_file: str | None = None,
        block_size: int = 64,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        steps_per_epoch: int = 500,
        val_fraction: float = 0.1,
        max_val_windows: int | None = None,
        seed: int = 0,
        synthetic_chars: int = 60_000,
        data_dir: str | None = None,
        prompt_length: int = 16,
        eval_prompts: int = 128,
        eval_new_tokens: int = 16,
    ) -> None:
        super().__init__(
            source=source,
            text_file=text_file,
            block_size=block_size,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            steps_per_epoch=steps_per_epoch,
            val_fraction=val_fraction,
            max_val_windows=max_val_windows,
            seed=seed,
            synthetic_chars=synthetic_chars,
            data_dir=data_dir,
            train_on="windows",
            prompt_length=prompt_length,
            eval_prompts=eval_prompts,
            eval_new_tokens=eval_new_tokens,
        )
        self.tokenizer_name = None  # the model's tokenizer, given to prepare(); not a char/gpt2 choice

    def prepare(self, tokenizer: Any) -> None:
        """The HF family's seam: read and split the text, and encode both splits with the model's tokenizer."""
        if self.ids:
            return
        self.prepare_data()
        text = self.load_text()
        self.text = self.split_text(text)
        self.use_tokenizer(HFTextTokenizer(tokenizer))

    def setup(self, stage: str | None = None) -> None:
        if self.ids:
            return
        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        policy = getattr(module, "policy", None)
        if policy is None or not hasattr(policy, "load_tokenizer"):
            raise ValueError(
                f"{type(self).__name__} takes its tokenizer from the model: use it with model.backbone "
                "prefalign.models.HFCausalLM or prefalign.families.hf.HFCausalLMFromConfig."
            )
        self.prepare(policy.load_tokenizer())


__all__ = ["HFTextDataModule", "HFTextTokenizer"]
