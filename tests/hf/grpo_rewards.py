"""Reward functions in TRL's ``reward_funcs`` form, named by import path from the GRPO tests' configs."""

from __future__ import annotations

CALLS: list[dict] = []  # what the functions were called with, for the tests to read


def char_count(prompts, completions, completion_ids, **kwargs):
    """The completion's length in characters (conversational: its message's content); records its arguments."""
    CALLS.append({"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **kwargs})
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t)) for t in texts]


def mentions_answer(prompts, completions, answer, **kwargs):
    """1 when the completion contains a word of the row's ``answer`` column, None (not applicable) for odd rows."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [None if i % 2 else float(any(w in t for w in a.split())) for i, (t, a) in enumerate(zip(texts, answer))]


def one_short(prompts, completions, **kwargs):
    """Wrong on purpose: one value fewer than there are completions."""
    return [0.0] * (len(completions) - 1)
