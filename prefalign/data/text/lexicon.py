"""Lexical validity of text: how many of a continuation's words a word list knows, with a repetition guard.

Plain string functions: text-pair mining (:mod:`prefalign.data.text.preference`) ranks samples with them, and the
language family's reward (:class:`~prefalign.families.language.rewards.LexicalValidity`) and evaluation score with them.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import Tensor

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
