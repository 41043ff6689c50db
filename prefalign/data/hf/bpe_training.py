"""A byte-level BPE tokenizer trained locally with ``tokenizers``, saved as a transformers tokenizer directory.

What a model built from a config (:class:`~prefalign.families.hf.HFCausalLMFromConfig`) uses instead of a hub tokenizer:
GPT-2's scheme (byte-level pre-tokenizer and decoder, so any text round-trips and nothing is unknown) with a
vocabulary learnt from the training split only, and one special token, ``<|endoftext|>``, which is EOS, BOS and
padding (TRL appends EOS as text to every completion; the tokenizer adds no special tokens by itself). The directory
is what ``PreTrainedTokenizerFast.save_pretrained`` writes, so ``AutoTokenizer.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from filelock import FileLock

from prefalign.models.hf import require

ENDOFTEXT = "<|endoftext|>"


def train_bpe_tokenizer(lines: Iterable[str], vocab_size: int) -> Any:
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE of ``vocab_size`` ids (the 256 bytes, merges, EOS) learnt
    from ``lines``."""
    if vocab_size < 258:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE: at least 258 (256 bytes, EOS, a merge)."
        )
    tokenizers = require("tokenizers", "training a BPE tokenizer")
    transformers = require("transformers", "training a BPE tokenizer")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no text is ever unknown
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT
    )


def ensure_bpe_tokenizer(folder: str | os.PathLike, text: Callable[[], str], vocab_size: int) -> Path:
    """The tokenizer directory ``folder``, trained on ``text()`` (called only when the directory is missing) and
    written atomically: saved into a temporary folder beside it, then renamed, under a file lock, so a crash leaves
    no half-written tokenizer and concurrent runs train it once."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "tokenizer.json").is_file():
            return folder
        # One line per text line: the trainer counts words line by line (a 5M-character single string is slow).
        tokenizer = train_bpe_tokenizer(text().splitlines(keepends=True), vocab_size)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            tokenizer.save_pretrained(str(tmp))
            if folder.exists():  # an incomplete folder from before (no tokenizer.json): replaced
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


__all__ = ["ENDOFTEXT", "ensure_bpe_tokenizer", "train_bpe_tokenizer"]
