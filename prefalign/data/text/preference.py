"""TextPreferenceDataModule: preference pairs of continuations, mined with the frozen reference (best-of-2 or SPIN)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from prefalign.checkpoint import CheckpointError
from prefalign.data.mined_pairs import MinedPairs
from prefalign.data.text.datamodule import CharTextDataModule
from prefalign.data.text.lexicon import lexicon, valid_word_rates
from prefalign.data.text.model_tokenizer import Tokenizer, check_same_kind, tokenizer_name_of, tokenizer_of_model
from prefalign.models.generation import sample
from prefalign.models.loading import load_model

PairStrategy = Literal["best_of_2", "spin"]


def mine_text_pairs(
    reference: torch.nn.Module,
    prompts: Tensor,
    real: Tensor,
    strategy: PairStrategy,
    tokenizer: Tokenizer,
    words: frozenset[str],
    seed: int = 0,
    chunk: int = 512,
) -> dict[str, Tensor]:
    """Pairs of continuations of ``prompts [N, P]``, each ``real.shape[1]`` tokens long.

    ``best_of_2``: two reference samples per prompt, ranked by lexical validity (:func:`valid_word_rate`); the better
    is chosen, ties are dropped. ``spin`` (Chen et al., 2024, arXiv:2401.01335): the real continuation is chosen over
    one reference sample. Sampling is batched (``chunk`` rows at a time) and seeded. Samples are judged as text:
    ``tokenizer`` (characters or BPE) decodes them.
    """
    g = torch.Generator().manual_seed(seed)
    draws = 2 if strategy == "best_of_2" else 1
    rows = prompts.repeat_interleave(draws, dim=0)
    block = getattr(reference, "block_size")
    samples = torch.cat(
        [sample(reference, part, real.shape[1], len(tokenizer), block, generator=g) for part in rows.split(chunk)]
    )
    samples = samples.view(len(prompts), draws, -1)
    if strategy == "spin":
        keep = torch.ones(len(prompts), dtype=torch.bool)
        chosen, rejected = real, samples[:, 0]
        scores = valid_word_rates([tokenizer.decode(s) for s in samples[:, 0]], words).view(-1, 1)
    else:
        scores = valid_word_rates([tokenizer.decode(s) for s in samples.flatten(0, 1)], words).view(len(prompts), 2)
        first_wins = scores[:, 0] > scores[:, 1]
        keep = scores[:, 0] != scores[:, 1]
        chosen = torch.where(first_wins.unsqueeze(1), samples[:, 0], samples[:, 1])
        rejected = torch.where(first_wins.unsqueeze(1), samples[:, 1], samples[:, 0])
    return {
        "prompt": prompts[keep],
        "chosen": chosen[keep],
        "rejected": rejected[keep],
        "pool": torch.tensor(len(prompts)),
        "reference_valid_words": scores.mean(),
    }


class TextPreferenceDataModule(MinedPairs, CharTextDataModule):
    """Text plus preference pairs of continuations mined with the frozen reference, cached on disk under a fingerprint
    of (reference weights, text, split, strategy, sizes, seed), as the MNIST pairs are.

    Training batches: ``prompt [B, P]``, ``chosen``/``rejected [B, R]`` and their masks (all True: every continuation
    has ``response_length`` characters). Validation and test are the validation windows (loss, perplexity) and the
    family's sample metrics, as for pretraining.

    Args:
        pair_strategy: ``best_of_2`` (two reference samples ranked by lexical validity, ties dropped) or ``spin``
            (real continuation ≻ reference sample).
        num_prompts: training prompts to mine (each gives at most one pair).
        response_length: tokens per continuation (characters for char).
        reference_ckpt: the reference weights; default: the model's ``reference_ckpt``.
        cache_dir: where mined pairs are cached.
        (other arguments: see :class:`CharTextDataModule`)
    """

    def __init__(
        self,
        pair_strategy: PairStrategy = "best_of_2",
        num_prompts: int = 4096,
        response_length: int = 32,
        reference_ckpt: str | None = None,
        cache_dir: str = "artifacts/pairs",
        **kwargs: Any,
    ) -> None:
        # The text arguments are CharTextDataModule's, passed through (the CLI reads them from its signature); the
        # training batches are the mined pairs, so the window and RL-prompt settings are fixed.
        super().__init__(steps_per_epoch=1, train_on="windows", prompts=None, **kwargs)
        if pair_strategy not in ("best_of_2", "spin"):
            raise ValueError(f"pair_strategy must be best_of_2 or spin, got {pair_strategy!r}")
        if self.prompt_length + response_length > self.block_size + 1:
            raise ValueError(
                f"prompt_length + response_length = {self.prompt_length + response_length} must fit the block: "
                f"at most block_size + 1 = {self.block_size + 1}."
            )
        self.pair_strategy, self.num_prompts, self.response_length = pair_strategy, num_prompts, response_length
        self.init_mining(reference_ckpt, cache_dir)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage not in (None, "fit") or self.pairs:
            return
        path = self.mining_reference("configs/lm_pretrain.yaml writes artifacts/reference/lm_tiny.pt")
        reference = load_model(path).eval()
        # The reference's ids must mean what the data's mean: char vs gpt2 is refused, a char reference with
        # other characters re-encodes the text with its own vocabulary (or names the characters it lacks).
        name = tokenizer_name_of(reference)
        if name is None:
            raise CheckpointError(
                f"the reference {path} holds a {type(reference).__name__}, not a language model: point model.reference_ckpt "
                "to weights written by an LM config (configs/lm_pretrain.yaml writes artifacts/reference/lm_tiny.pt)."
            )
        check_same_kind(name, self.tokenizer.name, f"the reference {path}")
        reference_tok = tokenizer_of_model(reference, reuse=self.tokenizer)
        if reference_tok is not None and not reference_tok.same_as(self.tokenizer):
            self.use_tokenizer(reference_tok)
        key = {
            "source": self.source,
            "text_file": self.text_file,
            "synthetic_chars": self.synthetic_chars,
            "val_fraction": self.val_fraction,
            "strategy": self.pair_strategy,
            "num_prompts": self.num_prompts,
            "seed": self.seed,
            "prompt_length": self.prompt_length,
            "response_length": self.response_length,
            "format": 1,
        }

        def mine() -> dict:
            rank_zero_info(
                f"Mining {self.pair_strategy} pairs of continuations for {self.num_prompts} prompts with {path} ..."
            )
            g = torch.Generator().manual_seed(self.seed)
            length = self.prompt_length + self.response_length
            starts = torch.randint(len(self.ids["train"]) - length, (self.num_prompts,), generator=g)
            spans = self.ids["train"][starts.unsqueeze(1) + torch.arange(length)]
            with torch.no_grad():
                return mine_text_pairs(
                    reference,
                    spans[:, : self.prompt_length],
                    spans[:, self.prompt_length :],
                    self.pair_strategy,
                    self.tokenizer,
                    lexicon(self.text["train"]),
                    self.seed,
                )

        cached = self.cached_pairs(f"text-pairs-{self.pair_strategy}", path, key, mine)
        if len(cached["prompt"]) == 0:
            raise ValueError(
                "no pairs were mined: every best-of-2 sample pair tied. Raise data.init_args.num_prompts or response_length."
            )
        self.pairs = {k: cached[k] for k in ("prompt", "chosen", "rejected")}
        self.mining_stats = {
            "mining/pairs": float(len(self.pairs["prompt"])),
            "mining/pool_size": float(cached["pool"]),
            "mining/reference_valid_words": float(cached["reference_valid_words"]),
        }
        rank_zero_info(
            f"Mined {len(self.pairs['prompt'])} pairs ({self.pair_strategy}) from {int(cached['pool'])} prompts."
        )

    def train_dataloader(self):
        mask = torch.ones_like(self.pairs["chosen"], dtype=torch.bool)
        return self._loader({**self.pairs, "chosen_mask": mask, "rejected_mask": mask}, train=True, shuffle=True)
