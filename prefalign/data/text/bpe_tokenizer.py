"""GPT-2's byte-level BPE (the tiny-transformer notebook tokenizes with ``AutoTokenizer.from_pretrained("gpt2")``), through tiktoken.

Optional: needs ``pip install -e .[bpe]`` (tiktoken) and the verified ``gpt2.tiktoken`` file
(:mod:`prefalign.data.text.gpt2_vocab`). The encoding is built the way tiktoken builds ``gpt2`` itself
(``tiktoken_ext/openai_public.py``): its pre-tokenising regex, 50,256 mergeable ranks, ``<|endoftext|>`` = 50256,
50,257 ids in all.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import torch
from torch import Tensor

# tiktoken's r50k_pat_str: equivalent to the original GPT-2 regex
# 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ (tiktoken says), but faster.
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
ENDOFTEXT = "<|endoftext|>"
GPT2_N_VOCAB = 50257


class TokenizerUnavailableError(RuntimeError):
    """The optional BPE dependency is missing; the message says how to install it."""


def _tiktoken() -> Any:
    try:
        import tiktoken
    except ImportError:
        raise TokenizerUnavailableError(
            "the gpt2 tokenizer needs tiktoken: `pip install -e .[bpe]` (or `pip install 'tiktoken>=0.7'`), "
            "or use the character tokenizer (data.init_args.tokenizer: char)."
        ) from None
    return tiktoken


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """A ``.tiktoken`` file's ``base64(token) rank`` lines as ``{token bytes: rank}``.

    The format ``tiktoken.load.load_tiktoken_bpe`` reads; parsed here from the bytes that were just verified
    because ``load_tiktoken_bpe(path)`` would copy the file into ``$TMPDIR/data-gym-cache`` and, on later calls,
    read that unverified copy instead (a test checks both give the same ranks).
    """
    ranks = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise ValueError(f"line {number} of the BPE file is not `base64-token rank`: {line[:60]!r}") from None
    return ranks


class BPETokenizer:
    """A tiktoken encoding behind the interface of :class:`~prefalign.data.text.CharTokenizer`: ``encode`` text to
    a long tensor of ids, ``decode`` ids to text, ``len`` = number of ids. Text is encoded as plain text
    (``<|endoftext|>`` in the text is not the special token). Decoding replaces bytes that are not valid UTF-8
    (a sample may stop in the middle of a multi-byte character).

    ``sha256`` identifies the ranks file; a model trained with this tokenizer records it (see
    :mod:`prefalign.data.text.model_tokenizer`).
    """

    unit = "token"

    def __init__(self, encoding: Any, name: str, sha256: str) -> None:
        self.encoding, self.name, self.sha256 = encoding, name, sha256

    def __len__(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, what: str = "text") -> Tensor:
        # Every string has an encoding (byte-level BPE): unlike characters, nothing can be unknown. ``what`` is
        # accepted for the CharTokenizer interface.
        return torch.tensor(self.encoding.encode_ordinary(text), dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        return self.encoding.decode(ids.tolist() if isinstance(ids, Tensor) else list(ids))

    def same_as(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and (other.name, other.sha256) == (self.name, self.sha256)


def gpt2_tokenizer(root: str | os.PathLike | None = None) -> BPETokenizer:
    """GPT-2's tokenizer from the verified ``gpt2.tiktoken`` (fetched on first use; see :mod:`.gpt2_vocab`)."""
    # Imported here, not at the top: the package imports this module, and `python -m prefalign.data.text.gpt2_vocab`
    # must find gpt2_vocab not yet imported.
    from prefalign.data.text.gpt2_vocab import VOCAB_SHA256, load_gpt2_vocab

    tiktoken = _tiktoken()
    ranks = parse_ranks(load_gpt2_vocab(root))
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_N_VOCAB - 1},
        explicit_n_vocab=GPT2_N_VOCAB,
    )
    return BPETokenizer(encoding, "gpt2", VOCAB_SHA256)
