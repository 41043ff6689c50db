"""Rewards for text: lexical validity (with a repetition guard), and the tiny-transformer notebook's length "reward"."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from prefalign.data.text.lexicon import lexicon, valid_word_rates
from prefalign.objectives.rewards import RewardFunction
from prefalign.validation import check_in_range


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
            raise ValueError(
                "LexicalValidity needs the training text for its word list: use prefalign.data.text.CharTextDataModule."
            )
        self.words = lexicon(text)
        self.tokenizer = module.family.tokenizer

    def forward(self, rollout: Any) -> Tensor:
        b, k, _ = rollout.responses.shape
        texts = [
            self.tokenizer.decode(r[m]) for r, m in zip(rollout.responses.view(b * k, -1), rollout.mask.view(b * k, -1))
        ]
        return valid_word_rates(texts, self.words, self.min_distinct_2).view(b, k).to(rollout.responses.device)


class NegativeLength(RewardFunction):
    """The tiny-transformer notebook's "reward model that prefers shorter responses": minus the length of prompt plus continuation.

    With a fixed number of new tokens it is the same number for every sample: a constant. Kept to reproduce the
    seed's loop (``configs/lm_seed_pg.yaml``) and to show what a constant reward does to a policy gradient.
    """

    def forward(self, rollout: Any) -> Tensor:
        prompt = rollout.batch["prompt"].shape[1]
        return -(prompt + rollout.mask.sum(-1)).float()
