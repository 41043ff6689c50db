"""A character-level tokenizer: one id per distinct character of the training split."""

from __future__ import annotations

import torch
from torch import Tensor


class UnknownCharacterError(ValueError):
    """Text holds characters the vocabulary does not."""


class CharTokenizer:
    """Maps each character of ``chars`` to its index. Built from the training split (sorted distinct characters);
    the model keeps the same list in its ``vocab`` buffer, so a weights file carries its own tokenizer."""

    name = "char"
    unit = "character"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the vocabulary has repeated characters.")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "text") -> Tensor:
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError:
            unknown = sorted(set(text) - set(self.index))
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UnknownCharacterError(
                f"{what} has {len(unknown)} character(s) outside the model's {len(self.chars)}-character vocabulary: {shown}. "
                "Remove them, or train a reference on text that contains them."
            ) from None

    def decode(self, ids: Tensor | list[int]) -> str:
        return "".join(self.chars[i] for i in (ids.tolist() if isinstance(ids, Tensor) else ids))

    def same_as(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    # The vocabulary as a fixed-size integer tensor (code points, -1 = unused), for the model's state_dict.
    def to_codes(self, size: int) -> Tensor:
        if len(self.chars) > size:
            raise ValueError(
                f"the text has {len(self.chars)} distinct characters but the model has room for {size}: "
                f"raise model.backbone.init_args.vocab_size to at least {len(self.chars)}."
            )
        codes = torch.full((size,), -1, dtype=torch.int32)
        codes[: len(self.chars)] = torch.tensor([ord(c) for c in self.chars], dtype=torch.int32)
        return codes

    @classmethod
    def from_codes(cls, codes: Tensor) -> CharTokenizer | None:
        chars = "".join(chr(int(c)) for c in codes.tolist() if c >= 0)
        return cls(chars) if chars else None
