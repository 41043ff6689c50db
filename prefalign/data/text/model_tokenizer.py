"""Which tokenizer a language model's ids mean, how the model (and so its weights file) records it, and the check
that data and model agree.

A weights file must be enough to rebuild the tokenizer (``python -m prefalign generate --ckpt``, mining pairs
with a reference), and ids from one tokenizer fed to a model trained with another would be silently wrong, so:

- ``char``: the model's ``vocab`` buffer holds the characters (:meth:`CharTokenizer.to_codes`); the tokenizer is
  rebuilt from it. A weights file with no tokenizer name (every file written before BPE existed) is char.
- ``gpt2``: the name is the model's ``tokenizer`` constructor argument (in the weights file's ``init_args``) and
  the sha256 of the BPE ranks file is its ``tokenizer_sha256`` buffer; the tokenizer is rebuilt from the verified
  local file, and refused if that file's sha256 differs from the recorded one.

A fresh model has no tokenizer yet (``vocab`` all −1, ``tokenizer_sha256`` all zero): :func:`bind_tokenizer`
records the data's, after checking the kinds match.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from prefalign.data.text.bpe_tokenizer import GPT2_N_VOCAB, BPETokenizer, gpt2_tokenizer
from prefalign.data.text.char_tokenizer import CharTokenizer

Tokenizer = Union[CharTokenizer, BPETokenizer]
TOKENIZERS = ("char", "gpt2")


class TokenizerMismatchError(ValueError):
    """A model and the data (or a BPE file) disagree on what the token ids mean."""


def make_tokenizer(name: str, train_text: str) -> Tokenizer:
    """The data's tokenizer: ``char`` from the training split's characters, ``gpt2`` from the verified BPE file."""
    if name == "char":
        return CharTokenizer.from_text(train_text)
    if name == "gpt2":
        return gpt2_tokenizer()
    raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {name!r}")


def tokenizer_name_of(model: nn.Module) -> str | None:
    """``char``, ``gpt2``, or None for a model that is not a language model."""
    name = getattr(model, "tokenizer_name", None)
    if name is None and isinstance(getattr(model, "vocab", None), Tensor):
        return "char"  # a decoder class that keeps only the char ``vocab`` buffer
    return name


def recorded_sha256(model: nn.Module) -> str | None:
    """The hex sha256 in a BPE model's ``tokenizer_sha256`` buffer; None while it is unset (all zero)."""
    buffer = getattr(model, "tokenizer_sha256", None)
    if not isinstance(buffer, Tensor) or not bool(buffer.any()):
        return None
    return bytes(buffer.to(torch.uint8).tolist()).hex()


def check_same_kind(model_name: str | None, data_name: str, model_what: str = "the model") -> None:
    """Refuse a model and data that tokenize differently (char vs gpt2), saying which setting to change."""
    if model_name is None or model_name == data_name:
        return
    size = f", vocab_size: {GPT2_N_VOCAB}" if data_name == "gpt2" else ""
    raise TokenizerMismatchError(
        f"{model_what} uses the {model_name} tokenizer but the data uses {data_name} (data.init_args.tokenizer): the same ids "
        f"would stand for different text. Set data.init_args.tokenizer: {model_name}, or use a {data_name} model "
        f"(model.backbone.init_args: {{tokenizer: {data_name}{size}}}, and a reference trained with it)."
    )


def tokenizer_of_model(model: nn.Module, reuse: Tokenizer | None = None) -> Tokenizer | None:
    """The tokenizer ``model`` was trained with, rebuilt from the model alone; None for a fresh model (or a model that
    is not a language model). A BPE tokenizer is loaded from its verified file, unless ``reuse`` is already that
    file's; a file whose sha256 differs from the recorded one is refused."""
    name = tokenizer_name_of(model)
    if name == "char":
        return CharTokenizer.from_codes(model.vocab)
    sha = recorded_sha256(model)
    if name is None or sha is None:
        return None
    if isinstance(reuse, BPETokenizer) and reuse.name == name:
        tokenizer = reuse
    elif name == "gpt2":
        tokenizer = gpt2_tokenizer()
    else:
        raise TokenizerMismatchError(
            f"the model records an unknown tokenizer {name!r}; this prefalign knows {', '.join(TOKENIZERS)}."
        )
    if tokenizer.sha256 != sha:
        raise TokenizerMismatchError(
            f"the model was trained with a {name} BPE file of sha256 {sha}, but the {name} file here has sha256 {tokenizer.sha256}: "
            "its ids would be read with other merges. Use the prefalign version that trained it, or retrain."
        )
    return tokenizer


def bind_tokenizer(model: nn.Module, tokenizer: Tokenizer) -> None:
    """Record ``tokenizer`` in a fresh ``model`` (its weights file then carries it)."""
    name = tokenizer_name_of(model)
    check_same_kind(name, tokenizer.name, "the model (model.backbone.init_args.tokenizer)")
    if name == "char":
        model.vocab.copy_(tokenizer.to_codes(model.vocab.numel()))
        return
    rows = getattr(model, "init_args", {}).get("vocab_size", 0)
    if len(tokenizer) > rows:
        raise ValueError(
            f"the {tokenizer.name} tokenizer has {len(tokenizer)} ids but the model has room for {rows}: "
            f"set model.backbone.init_args.vocab_size to at least {len(tokenizer)}."
        )
    model.tokenizer_sha256.copy_(torch.tensor(list(bytes.fromhex(tokenizer.sha256)), dtype=torch.uint8))
