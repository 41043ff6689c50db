"""TextPairsDataModule: preference pairs mined from a Hugging Face causal LM on a text corpus, trained on as TRL data.

The offline recipe's alignment data (``configs/hf_shakespeare_dpo.yaml``): the pretrained model samples two
continuations of training-split prompts, the one with more real words wins (:mod:`prefalign.data.hf.text_mining`),
and the pairs are written as a TRL standard-format jsonl. From there the run is the ordinary TRL path
(:class:`~prefalign.data.hf.TRLPreferenceDataModule`: TRL's tokenization, collator, data order and the cached
reference log-probs). Validation is the text's, as in pretraining: the validation split's windows and held-out
prompts (:class:`~prefalign.data.hf.HFTextDataModule`), judged by :class:`~prefalign.families.hf.HFTextFamily`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_info

from prefalign.data.hf.datamodule import TRLPreferenceDataModule
from prefalign.data.hf.text_eval import TextValidation, training_prompts
from prefalign.data.hf.text_mining import mine_best_of_2, write_jsonl_atomic
from prefalign.data.hf.text_windows import HFTextDataModule
from prefalign.data.text.lexicon import lexicon
from prefalign.digests import fingerprint


class TextPairsDataModule(TextValidation, TRLPreferenceDataModule):
    """Best-of-2 pairs of continuations mined with the pretrained model, as TRL data; the text's validation.

    :class:`~prefalign.families.hf.HFTextFamily` calls :meth:`mine_pairs` with the policy before training (the
    policy is then still the pretrained model, the reference). The pairs are written to
    ``<cache_dir>/hf-text-pairs-<fingerprint>.jsonl`` (TRL standard format, with ``.stats.json`` beside it), where the
    fingerprint hashes the model's files, the text settings and the mining settings: a changed model mines again,
    an unchanged one reads the file. The log says which file; it is ordinary TRL data, usable with any TRL trainer.

    Args:
        source, text_file, data_dir, val_fraction, synthetic_chars: the text (:class:`~prefalign.data.hf.HFTextDataModule`).
        num_prompts: training-split prompts to mine (each gives at most one pair; ties are dropped).
        prompt_length: tokens per prompt (mined and held-out).
        response_length: tokens per sampled continuation (mined and judged).
        block_size, max_val_windows, eval_prompts: the validation windows and held-out prompts.
        batch_size, eval_batch_size, max_length, truncation_mode: TRL's (:class:`~prefalign.data.hf.TRLPreferenceDataModule`).
        seed: the mining's seed and TRL's data-order seed.
        cache_dir: where the mined pairs and the cached reference log-probs are written.
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
        response_length: int = 16,
        block_size: int = 64,
        max_val_windows: int | None = None,
        eval_prompts: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        max_length: int | None = 1024,
        truncation_mode: Literal["keep_start", "keep_end"] = "keep_start",
        seed: int = 42,
        cache_dir: str = "artifacts/hf_pairs",
    ) -> None:
        super().__init__(
            dataset_name="",  # the mined file, known once the model is (mine_pairs)
            val_split=None,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            max_length=max_length,
            truncation_mode=truncation_mode,
            seed=seed,
            cache_dir=cache_dir,
        )
        if num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
        if response_length < 1:
            raise ValueError(f"response_length must be >= 1, got {response_length}")
        self.num_prompts, self.prompt_length, self.response_length = num_prompts, prompt_length, response_length
        self.text_data = HFTextDataModule(
            source=source,
            text_file=text_file,
            data_dir=data_dir,
            val_fraction=val_fraction,
            synthetic_chars=synthetic_chars,
            block_size=block_size,
            eval_batch_size=eval_batch_size,
            max_val_windows=max_val_windows,
            # The text's own seed (it generates synthetic text): HFTextDataModule's default, so the base model's run
            # and this one read the same text. The mining and the data order use ``seed``.
            seed=0,
            prompt_length=prompt_length,
            eval_prompts=eval_prompts,
            eval_new_tokens=response_length,
        )
        self.pair_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ mining
    def mine_pairs(self, model: Any) -> Path:
        """Mine the pairs with ``model`` (an :class:`~prefalign.models.HFCausalLM`) unless this model's pairs are on
        disk already; point the TRL data at the file. Under a file lock, written atomically."""
        if self.dataset_name:
            return Path(self.dataset_name)
        tokenizer = model.load_tokenizer()
        self.text_data.prepare(tokenizer)
        data = self.text_data
        key = {
            "model": model.files_digest(),
            "source": data.source,
            "text_file": data.text_file,
            "synthetic_chars": data.synthetic_chars,
            "val_fraction": data.val_fraction,
            "num_prompts": self.num_prompts,
            "prompt_length": self.prompt_length,
            "response_length": self.response_length,
            "seed": self.seed,
            "strategy": "best_of_2",
            "format": 1,
        }
        path = Path(self.cache_dir) / f"hf-text-pairs-{fingerprint(key)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.is_file():
                rank_zero_info(
                    f"Mining best-of-2 pairs for {self.num_prompts} prompts with {model.model_name_or_path} ..."
                )
                prompts = training_prompts(data.ids["train"], self.num_prompts, self.prompt_length, self.seed)
                rows, stats = mine_best_of_2(
                    model, tokenizer, prompts, self.response_length, lexicon(data.text["train"]), self.seed
                )
                if not rows:
                    raise ValueError(
                        "no pairs were mined: every best-of-2 sample pair tied. Raise data.init_args.num_prompts or response_length."
                    )
                write_jsonl_atomic(rows, stats, path)
        self.pair_stats = json.loads(path.with_name(path.name + ".stats.json").read_text())
        rank_zero_info(
            f"Pairs: {int(self.pair_stats['mining/pairs'])} of {self.num_prompts} prompts in {path} (TRL standard format)."
        )
        self.dataset_name = str(path)
        return path

    def prepare(self, tokenizer: Any) -> None:
        if not self.dataset_name:
            raise ValueError(
                f"{type(self).__name__} mines its pairs with the model first: use it with model.family "
                "prefalign.families.hf.HFTextFamily (which calls mine_pairs)."
            )
        super().prepare(tokenizer)
        self.text_data.prepare(tokenizer)
        self.mining_stats = {**self.pair_stats, **self.mining_stats}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:  # used outside the CLI: mine with the module's policy first
            module = getattr(getattr(self, "trainer", None), "lightning_module", None)
            policy = getattr(module, "policy", None)
            if policy is not None and hasattr(policy, "files_digest"):
                self.mine_pairs(policy)
        super().setup(stage)
        self.share_trainer()


__all__ = ["TextPairsDataModule"]
