"""Rewards for text: lexical validity (with a repetition guard), and seed 002's length "reward"."""

from __future__ import annotations

import re
from typing import Any, Iterable

import torch
from torch import Tensor

from prefalign.objectives.base import check_in_range
from prefalign.objectives.rewards import RewardFunction

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def lexicon(text: str) -> frozenset[str]:
    """Every word of ``text``, lower-cased (letters with inner apostrophes)."""
    return frozenset(w.lower() for w in WORD.findall(text))


def complete_words(continuation: str) -> list[str]:
    """The words of a continuation that are whole: a word touching either end may be cut by the prompt or by the
    generation length, so it is not judged."""
    out = []
    for m in WORD.finditer(continuation):
        if m.start() > 0 and m.end() < len(continuation):
            out.append(m.group().lower())
    return out


def distinct_2(words: list[str]) -> float:
    """Distinct word bigrams over all word bigrams (Li et al., 2016); 1.0 with fewer than two bigrams."""
    pairs = list(zip(words, words[1:]))
    return len(set(pairs)) / len(pairs) if len(pairs) >= 2 else 1.0


def valid_word_rate(continuation: str, words: frozenset[str], min_distinct_2: float = 0.5) -> float:
    """Fraction of the continuation's complete words found in ``words``; 0 when it repeats itself (distinct-2 below
    ``min_distinct_2``) or has no complete word."""
    found = complete_words(continuation)
    if not found or distinct_2(found) < min_distinct_2:
        return 0.0
    return sum(w in words for w in found) / len(found)


def valid_word_rates(texts: Iterable[str], words: frozenset[str], min_distinct_2: float = 0.5) -> Tensor:
    return torch.tensor([valid_word_rate(t, words, min_distinct_2) for t in texts], dtype=torch.float32)


class LexicalValidity(RewardFunction):
    """The fraction of complete words in a sampled continuation that occur in the training split's word list,
    zeroed for degenerate repetition (word distinct-2 below ``min_distinct_2``: "the the the the" spells real
    words and must not score). A word cut by the start or the end of the continuation is not judged.

    The strings are decoded and split in Python, one per sample (B·k short strings per step, well under a
    millisecond each): lexical checks have no tensor form, and the cost is small beside the rollout.

    Args:
        min_distinct_2: the repetition guard's threshold.
    """

    def __init__(self, min_distinct_2: float = 0.5) -> None:
        super().__init__()
        check_in_range("min_distinct_2", min_distinct_2, 0.0, 1.0)
        self.min_distinct_2 = min_distinct_2
        self.words: frozenset[str] = frozenset()
        self.tokenizer = None

    def setup(self, module: Any, datamodule: Any) -> None:
        text = getattr(datamodule, "text", {}).get("train")
        if not text:
            raise ValueError("LexicalValidity needs the training text for its word list: use prefalign.data.text.CharTextDataModule.")
        self.words = lexicon(text)
        self.tokenizer = module.family.tokenizer

    def forward(self, rollout: Any) -> Tensor:
        b, k, _ = rollout.responses.shape
        texts = [self.tokenizer.decode(r[m]) for r, m in zip(rollout.responses.view(b * k, -1), rollout.mask.view(b * k, -1))]
        return valid_word_rates(texts, self.words, self.min_distinct_2).view(b, k).to(rollout.responses.device)


class NegativeLength(RewardFunction):
    """Seed 002's "reward model that prefers shorter responses": minus the length of prompt plus continuation.

    With a fixed number of new tokens it is the same number for every sample: a constant. Kept to reproduce the
    seed's loop (``configs/lm_seed_pg.yaml``) and to show what a constant reward does to a policy gradient.
    """

    def forward(self, rollout: Any) -> Tensor:
        prompt = rollout.batch["prompt"].shape[1]
        return -(prompt + rollout.mask.sum(-1)).float()
