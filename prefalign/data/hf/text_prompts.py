"""TextPromptsDataModule: held-in prompts of a text corpus as prompt-only data, for online RL (GRPO) on the text.

The offline GRPO recipe's data (``configs/hf_shakespeare_grpo.yaml``): prompts are token windows of the training split
at seeded random offsets, drawn as :class:`~prefalign.data.hf.TextPairsDataModule` draws the prompts it mines, and
served as :class:`~prefalign.data.hf.TRLPromptDataModule` serves a TRL prompt-only dataset (the same batches, rows and
``rows()`` for TRL-style reward functions, whose ``prompts`` are the windows' text). Validation is the text's, as in
pretraining and the DPO recipe: the validation split's windows and held-out prompts, judged by
:class:`~prefalign.families.hf.HFTextFamily`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from prefalign.data.hf.prompts import TRLPromptDataModule
from prefalign.data.hf.text_eval import TextValidation, training_prompts
from prefalign.data.hf.text_windows import HFTextDataModule
from prefalign.validation import check_in_range


class TextPromptsDataModule(TextValidation, TRLPromptDataModule):
    """``num_prompts`` held-in prompts of ``prompt_length`` tokens from the training split, as prompt-only data; the
    text's validation.

    The prompts are token ids cut from the encoded training split, not text encoded again: every prompt is exactly
    ``prompt_length`` tokens (no padding), as the held-out prompts the samples are judged on. Their text (the
    ``prompt`` column reward functions receive) is the windows decoded. The pool is fixed by ``seed``; each epoch
    visits it once in a seeded shuffled order (:class:`~prefalign.data.hf.TRLPromptDataModule`'s batches).

    Args:
        source, text_file, data_dir, val_fraction, synthetic_chars: the text (:class:`~prefalign.data.hf.HFTextDataModule`).
        num_prompts: held-in prompts in the pool (an epoch is ``num_prompts / batch_size`` steps).
        prompt_length: tokens per prompt (held-in and held-out).
        eval_new_tokens: tokens per judged sample of a held-out prompt (and of its real continuation).
        block_size, max_val_windows, eval_prompts: the validation windows and held-out prompts.
        batch_size: prompts per training step (each sampled ``k`` times).
        eval_batch_size: validation windows per batch.
        seed: the prompts' draw and the data order.
    """

    def __init__(
        self,
        source: Literal["shakespeare", "file", "synthetic"] = "shakespeare",
        text_file: str | None = None,
        data_dir: str | None = None,
        val_fraction: float = 0.1,
        synthetic_chars: int = 60_000,
        num_prompts: int = 4096,
        prompt_length: int = 16,
        eval_new_tokens: int = 16,
        block_size: int = 64,
        max_val_windows: int | None = None,
        eval_prompts: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        seed: int = 42,
    ) -> None:
        super().__init__(
            dataset_name="", val_split=None, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed
        )
        check_in_range("num_prompts", num_prompts, 1)
        self.num_prompts, self.prompt_length = num_prompts, prompt_length
        self.text_data = HFTextDataModule(
            source=source,
            text_file=text_file,
            data_dir=data_dir,
            val_fraction=val_fraction,
            synthetic_chars=synthetic_chars,
            block_size=block_size,
            eval_batch_size=eval_batch_size,
            max_val_windows=max_val_windows,
            seed=0,  # the text's own seed (synthetic text): HFTextDataModule's default, the base model's text
            prompt_length=prompt_length,
            eval_prompts=eval_prompts,
            eval_new_tokens=eval_new_tokens,
        )

    def prepare(self, tokenizer: Any) -> None:
        """Read and encode the text with the model's tokenizer, and draw the prompts (the HF family's seam)."""
        if self.splits:
            return
        self.tokenizer = tokenizer
        self.text_data.prepare(tokenizer)
        prompts = training_prompts(self.text_data.ids["train"], self.num_prompts, self.prompt_length, self.seed)
        self.splits["train"] = {
            "prompt_ids": prompts,
            "prompt_length": torch.full((len(prompts),), self.prompt_length, dtype=torch.long),
            "row": torch.arange(len(prompts)),
        }
        self.table = {"prompt": tokenizer.batch_decode(prompts.tolist(), skip_special_tokens=True)}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.share_trainer()


__all__ = ["TextPromptsDataModule"]
