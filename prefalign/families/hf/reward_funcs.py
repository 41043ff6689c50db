"""Ready-made reward functions in TRL's ``reward_funcs`` form (``f(prompts, completions, **kwargs) -> list[float]``).

Examples to start from and to test with; a real task names its own function in the config
(``reward_funcs: [my_module.my_reward]``).
"""

from __future__ import annotations

from typing import Any


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


__all__ = ["TargetLength", "completion_text"]
