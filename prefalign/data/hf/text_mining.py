"""Best-of-2 preference pairs mined from a Hugging Face causal LM on text prompts, as TRL standard-format rows.

The char LM's mining (:func:`prefalign.data.text.preference.mine_text_pairs`) for a transformers model: two sampled
continuations per prompt, the one with the higher valid-word rate (:func:`~prefalign.data.text.lexicon.valid_word_rate`)
is chosen, ties are dropped. The rows are text, ``{"prompt", "chosen", "rejected"}``: the file any TRL trainer (and
:class:`~prefalign.data.hf.TRLPreferenceDataModule`) reads, tokenized again from text as TRL tokenizes it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor

from prefalign.data.text.lexicon import valid_word_rates
from prefalign.models.hf_sampling import sample_continuations


def mine_best_of_2(
    model: Any,
    tokenizer: Any,
    prompts: Tensor,
    new_tokens: int,
    words: frozenset[str],
    seed: int = 0,
    chunk: int = 256,
) -> tuple[list[dict[str, str]], dict[str, float]]:
    """(TRL standard rows, statistics) for the prompts ``[N, P]`` (token ids): two continuations of ``new_tokens``
    tokens each, ranked by valid-word rate against ``words``; ties (most often both 0 or both 1) are dropped.
    Sampling runs ``chunk`` prompts at a time, each chunk seeded from ``seed``, so the result does not depend on
    the machine's batch layout."""

    def decode(ids: Tensor) -> str:
        return tokenizer.decode(ids.tolist(), skip_special_tokens=True)

    rows: list[dict[str, str]] = []
    total = 0.0
    for i, part in enumerate(prompts.split(chunk)):
        samples = sample_continuations(model, part, new_tokens, 2, seed + i).view(len(part), 2, -1)
        texts = [[decode(s) for s in pair] for pair in samples]
        scores = valid_word_rates([t for pair in texts for t in pair], words).view(len(part), 2)
        total += float(scores.sum())
        for prompt, (a, b), (sa, sb) in zip(part, texts, scores.tolist()):
            if sa == sb:
                continue
            chosen, rejected = (a, b) if sa > sb else (b, a)
            rows.append({"prompt": decode(prompt), "chosen": chosen, "rejected": rejected})
    stats = {
        "mining/pool_size": float(len(prompts)),
        "mining/pairs": float(len(rows)),
        "mining/reference_valid_words": total / max(2 * len(prompts), 1),
    }
    return rows, stats


def write_jsonl_atomic(rows: list[dict], stats: dict[str, float], path: str | os.PathLike) -> Path:
    """``rows`` as JSON lines at ``path`` and ``stats`` beside it (``<path>.stats.json``), each written to a temporary
    file in the same folder and renamed (the stats first: a jsonl that exists always has them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in (
        (path.with_name(path.name + ".stats.json"), json.dumps(stats, indent=2, sort_keys=True)),
        (path, "".join(json.dumps(r) + "\n" for r in rows)),
    ):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


__all__ = ["mine_best_of_2", "write_jsonl_atomic"]
