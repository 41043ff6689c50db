"""HFTextFamily: the Hugging Face causal-LM family on a text corpus, judged as the char LM is (valid-word rate)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from prefalign.data.text.lexicon import complete_words, distinct_2, lexicon, valid_word_rates
from prefalign.families.hf.family import HFCausalLMFamily
from prefalign.models.hf_sampling import sample_continuations


class HFTextFamily(HFCausalLMFamily):
    """:class:`HFCausalLMFamily` with a text corpus's evaluation (:class:`~prefalign.data.hf.HFTextDataModule` or
    :class:`~prefalign.data.hf.TextPairsDataModule`): on validation and test windows, beside the LM loss
    (``val/loss``, ``val/ppl``), the reference's loss (``val/reference/loss``, once per stage) and the valid-word rate
    of seeded samples continuing the data's held-out prompts (``val/valid_words``, ``val/distinct_2``; once per
    stage ``val/reference/valid_words`` and ``val/real/valid_words``, the real continuations'). The rate is
    :func:`~prefalign.data.text.lexicon.valid_word_rate` against the training split's words, as the char LM's.

    A data module with ``mine_pairs(model)`` (:class:`~prefalign.data.hf.TextPairsDataModule`) is asked to mine its
    preference pairs with the untrained policy, the pretrained model, before its data is tokenized.

    With prompt-only text data (:class:`~prefalign.data.hf.TextPromptsDataModule`) it trains with PPO-lite (GRPO) as
    :class:`HFCausalLMFamily` does, sampling as ``sampling`` says; the evaluation samples stay the same whatever the
    training samples (temperature 1, the data's ``eval_new_tokens``), so runs of any objective compare.

    Args:
        samples_per_prompt: continuations sampled per held-out prompt.
        seed: the samples' seed (the same prompts and seed every validation: only the model changes).
        sampling: the training rollouts' settings, :class:`HFCausalLMFamily`'s (``max_new_tokens``, ``temperature``,
            ``top_p``, ...).
    """

    summary_keys = ("loss", "valid_words", "rewards/accuracies")

    def __init__(self, samples_per_prompt: int = 2, seed: int = 1234, **sampling: Any) -> None:
        super().__init__(**sampling)
        if samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
        self.samples_per_prompt, self.seed = samples_per_prompt, seed
        self.words: frozenset[str] = frozenset()
        self._judge: tuple[Tensor, Tensor] | None = None
        self._tokenizer: Any = None
        self._ref_sums: dict[str, dict[str, Tensor]] = {}
        self._fixed: dict[str, float] = {}  # per stage: the reference's loss and rate, the real text's rate

    def check_config(self, policy: Any, datamodule: Any) -> None:
        if hasattr(datamodule, "mine_pairs") and hasattr(policy, "load_tokenizer"):
            datamodule.mine_pairs(policy)  # the policy is still the pretrained model: it mines
        super().check_config(policy, datamodule)

    def setup(self, module: Any, stage: str) -> None:
        super().setup(module, stage)
        datamodule = module.datamodule
        text = getattr(datamodule, "text", {}) or {}
        if text.get("train") and getattr(datamodule, "eval_prompts", 0):
            self.words = lexicon(text["train"])
            self._judge = datamodule.evaluation_prompts()
            self._tokenizer = module.policy.load_tokenizer()

    # ------------------------------------------------------------------ evaluation
    def eval_step(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        super().eval_step(module, batch, stage)
        reference = module.reference
        if "tokens" in batch and reference is not None and f"{stage}/reference/loss" not in self._fixed:
            tokens, mask, _ = self.token_logps(reference, batch)
            sums = self._ref_sums.setdefault(stage, {})
            for key, value in (("nll_sum", -(tokens.float() * mask).sum()), ("tokens", mask.sum().float())):
                sums[key] = sums.get(key, 0.0) + value.detach().cpu()

    def eval_epoch_end(self, module: Any, stage: str) -> None:
        super().eval_epoch_end(module, stage)
        ref = self._ref_sums.pop(stage, None)
        if module.trainer.sanity_checking:
            return  # a couple of batches: not the reference's loss, and no samples
        if ref:
            self._fixed[f"{stage}/reference/loss"] = float(ref["nll_sum"] / ref["tokens"].clamp(min=1))
        sampled = self._sample_metrics(module, stage)  # first, so the once-per-stage rates are in _fixed below
        metrics = {**{k: v for k, v in self._fixed.items() if k.startswith(f"{stage}/")}, **sampled}
        if metrics:
            module.log_dict({k: torch.tensor(float(v)) for k, v in metrics.items()}, sync_dist=False)

    def _sample_metrics(self, module: Any, stage: str) -> dict[str, float]:
        if self._judge is None or not self.words:
            return {}
        device = next(module.policy.parameters()).device
        prompts, real = (t.to(device) for t in self._judge)

        def decode(ids: Tensor) -> str:
            return self._tokenizer.decode(ids.tolist(), skip_special_tokens=True)

        def judge(model: Any) -> tuple[float, float]:
            ids = sample_continuations(model, prompts, real.shape[1], self.samples_per_prompt, self.seed)
            texts = [decode(r) for r in ids]
            rate = float(valid_word_rates(texts, self.words).mean())
            return rate, sum(distinct_2(complete_words(t)) for t in texts) / len(texts)

        out = dict(zip((f"{stage}/valid_words", f"{stage}/distinct_2"), judge(module.policy)))
        if f"{stage}/real/valid_words" not in self._fixed:
            real_texts = [decode(r) for r in real]
            self._fixed[f"{stage}/real/valid_words"] = float(valid_word_rates(real_texts, self.words).mean())
            reference = module.reference
            if reference is not None:
                self._fixed[f"{stage}/reference/valid_words"] = judge(reference)[0]
        return out

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        self._ref_sums.clear()


__all__ = ["HFTextFamily"]
