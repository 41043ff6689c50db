"""Ready-made reward functions in TRL's ``reward_funcs`` form (``f(prompts, completions, **kwargs) -> list[float]``).

Examples to start from and to test with; a real task names its own function in the config
(``reward_funcs: [my_module.my_reward]``).
"""

from __future__ import annotations

from typing import Any

from prefalign.data.text.lexicon import lexicon, valid_word_rates
from prefalign.validation import check_in_range


def completion_text(completion: Any) -> str:
    """The text of a completion: the string itself (standard data) or its last message's content (conversational)."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


class TargetLength:
    """Minus the distance of the completion's length in characters from ``target`` (TRL's quickstart ``reward_len``:
    ``-abs(20 - len(completion))``): a reward any model can learn quickly, to check a setup end to end.

    Args:
        target: the length, in characters, that scores 0 (the best).
    """

    def __init__(self, target: int = 20) -> None:
        self.target = target
        self.__name__ = "target_length"

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return [-abs(self.target - len(completion_text(c))) for c in completions]


class ValidWords:
    """Lexical validity (``configs/lm_ppo.yaml``'s reward, the measure :class:`~prefalign.families.hf.HFTextFamily`
    evaluates): the fraction of a completion's complete words found in the training split's word list, zero when it
    repeats itself (word distinct-2 below ``min_distinct_2``) or has no complete word; a word cut by either end of the
    completion is not judged (:func:`~prefalign.data.text.lexicon.valid_word_rate`).

    The word list is the data's: :class:`~prefalign.families.hf.TRLRewards` calls :meth:`bind_data` with the data
    module before training, and it reads the training split's text (``datamodule.text["train"]``, as
    :class:`~prefalign.data.hf.TextPromptsDataModule` holds it).

    Args:
        min_distinct_2: the repetition guard's threshold.
    """

    def __init__(self, min_distinct_2: float = 0.5) -> None:
        check_in_range("min_distinct_2", min_distinct_2, 0.0, 1.0)
        self.min_distinct_2 = min_distinct_2
        self.words: frozenset[str] = frozenset()
        self._text: str | None = None  # the text the word list was read from (bound once per text)
        self.__name__ = "valid_words"

    def bind_data(self, datamodule: Any) -> None:
        text = (getattr(datamodule, "text", None) or {}).get("train")
        if text is not None and text is self._text:
            return
        if not text:
            raise ValueError(
                f"ValidWords reads its word list from the data's training text, and {type(datamodule).__name__} has "
                "none: set data.class_path to prefalign.data.hf.TextPromptsDataModule."
            )
        self.words, self._text = lexicon(text), text

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        if not self.words:
            raise ValueError("ValidWords has no word list: TRLRewards gives it the data's (bind_data) before training.")
        return valid_word_rates([completion_text(c) for c in completions], self.words, self.min_distinct_2).tolist()


__all__ = ["TargetLength", "ValidWords", "completion_text"]
