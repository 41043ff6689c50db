"""What the language family reports: validation loss, perplexity, bits per character, calibration, samples."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from prefalign.data.text.lexicon import complete_words, distinct_2, lexicon, valid_word_rates
from prefalign.data.text.model_tokenizer import (
    Tokenizer,
    bind_tokenizer,
    check_same_kind,
    tokenizer_name_of,
    tokenizer_of_model,
)
from prefalign.families.base import ModelFamily
from prefalign.families.language.sequences import exact_token_kl, token_log_probs
from prefalign.models.generation import sample

N_BINS = 15  # calibration bins, as the classifier's reliability diagram


class LanguageEvaluation(ModelFamily):
    """Evaluation of next-character prediction on the validation split (every character predicted once).

    Logged per stage: ``loss`` (nats/char), ``ppl``, ``bpc`` (bits/char), ``acc`` (top-1), ``entropy`` (mean predictive
    entropy, nats/char), ``ece`` (15 equal-width
    confidence bins), ``kl_ref`` (exact per-token KL to the reference, when there is one) and, once per run,
    ``reference/loss``; from seeded samples of the data's validation prompts: ``valid_words`` (the lexical-validity
    rate), ``distinct_2``, and once ``reference/valid_words`` and ``real/valid_words`` (the real continuations); figures and tables: a reliability diagram, a top-5 next-character table for
    ``eval_prompts`` and sampled continuations of them (seeded, temperature 0.8), as W&B tables and CSV files.

    With the gpt2 tokenizer every "per character" above is per BPE token (``bpc`` is then bits per token, about
    3.2 characters on Shakespeare): not comparable with a char model's numbers as they stand. Samples are decoded
    to text by the tokenizer before they are judged, so ``valid_words`` and ``distinct_2`` compare across tokenizers.
    """

    def __init__(self, eval_prompts: tuple[str, ...], eval_new_tokens: int) -> None:
        super().__init__()
        self.eval_prompts = tuple(eval_prompts)
        self.eval_new_tokens = eval_new_tokens
        self.tokenizer: Tokenizer | None = None
        self.n_vocab = 0
        self.block_size = 0
        self._sums: dict[str, dict[str, Tensor]] = {}
        self._calibration: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self._reference_loss: dict[str, float] = {}
        self.words: frozenset[str] = frozenset()
        self._judge_prompts: tuple[Tensor, Tensor] | None = None
        self._fixed: dict[str, float] = {}  # reference and real-text sample metrics: computed once per stage

    # ------------------------------------------------------------------ lifecycle
    def check_config(self, policy: Any, datamodule: Any) -> None:
        if tokenizer_name_of(policy) is None or not hasattr(policy, "block_size"):
            raise ValueError(
                f"LanguageFamily needs a decoder that records its tokenizer (a char `vocab` buffer, or a `tokenizer_name`) "
                f"and a `block_size` (e.g. prefalign.models.TinyTransformer), got {type(policy).__name__}."
            )
        data_block = getattr(datamodule, "block_size", 0)
        if data_block > policy.block_size:
            raise ValueError(
                f"data.init_args.block_size={data_block} is longer than the model's block_size={policy.block_size}."
            )
        data_tokenizer = getattr(datamodule, "tokenizer_name", None)
        if data_tokenizer is not None:  # char vs gpt2 is known from the config: refuse before anything is written
            check_same_kind(
                tokenizer_name_of(policy),
                data_tokenizer,
                "the model (model.backbone.init_args.tokenizer, or the reference's weights)",
            )

    def setup(self, module: Any, stage: str) -> None:
        """Give a fresh model the data's vocabulary, or re-encode the data with a trained model's vocabulary.
        A model and data of different tokenizers (char vs gpt2) are refused."""
        policy = module.policy
        datamodule = module.datamodule
        self.check_config(policy, datamodule)
        data_tok = getattr(datamodule, "tokenizer", None)
        if data_tok is not None:  # a data module without ``tokenizer_name`` may still bring a tokenizer
            check_same_kind(
                tokenizer_name_of(policy),
                data_tok.name,
                "the model (model.backbone.init_args.tokenizer, or the reference's weights)",
            )
        model_tok = tokenizer_of_model(policy, reuse=data_tok)
        if model_tok is None:
            if data_tok is None:
                raise ValueError(
                    "the model has no vocabulary yet and the data module provides no tokenizer; use "
                    "prefalign.data.text.CharTextDataModule to pretrain."
                )
            bind_tokenizer(policy, data_tok)
            model_tok = data_tok
        elif data_tok is not None and not data_tok.same_as(model_tok):
            datamodule.use_tokenizer(model_tok)  # raises, naming the characters the model does not know
        self.configure(model_tok, policy.block_size)
        text = getattr(datamodule, "text", {}) if datamodule is not None else {}
        self.words = lexicon(text["train"]) if text.get("train") else frozenset()
        self._judge_prompts = (
            datamodule.evaluation_prompts() if self.words and getattr(datamodule, "eval_prompts", 0) else None
        )

    def configure(self, tokenizer: Tokenizer, block_size: int) -> None:
        """Bind the vocabulary and context length (``setup`` does it from the model; tests call it directly)."""
        self.tokenizer, self.n_vocab, self.block_size = tokenizer, len(tokenizer), block_size

    # ------------------------------------------------------------------ evaluation
    def eval_step(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        tokens = batch["tokens"]
        prompts, targets = tokens[:, :1], tokens[:, 1:]
        logps, dist = token_log_probs(module.policy, prompts, targets, self.n_vocab)
        confidence, prediction = dist.max(-1)
        sums = self._sums.setdefault(stage, {})
        add = {
            "nll": -logps.sum(),
            "count": torch.tensor(float(logps.numel()), device=logps.device),
            "correct": (prediction == targets).float().sum(),
            "entropy": -(dist.exp() * dist).sum(),
        }
        reference = module.reference
        if reference is not None:
            with torch.no_grad():
                ref_logps, ref_dist = token_log_probs(reference, prompts, targets, self.n_vocab)
            add["kl"] = exact_token_kl(dist, ref_dist).sum()
            if stage not in self._reference_loss:
                add["ref_nll"] = -ref_logps.sum()
        for key, value in add.items():
            sums[key] = sums.get(key, 0) + value.detach().double()
        self._calibration.setdefault(stage, []).append(
            (confidence.exp().flatten().cpu(), (prediction == targets).flatten().cpu())
        )

    def eval_epoch_end(self, module: Any, stage: str) -> None:
        sums = self._sums.pop(stage, {})
        calibration = self._calibration.pop(stage, [])
        if not sums or module.trainer.sanity_checking:
            return
        strategy = module.trainer.strategy
        totals = {k: strategy.reduce(v, reduce_op="sum") for k, v in sums.items()}
        count = totals["count"]
        loss = totals["nll"] / count
        metrics = {
            f"{stage}/loss": loss,
            f"{stage}/ppl": loss.exp(),
            f"{stage}/bpc": loss / math.log(2),
            f"{stage}/acc": totals["correct"] / count,
            f"{stage}/entropy": totals["entropy"] / count,
        }
        if "kl" in totals:
            metrics[f"{stage}/kl_ref"] = totals["kl"] / count
        if "ref_nll" in totals:
            self._reference_loss[stage] = float(totals["ref_nll"] / count)
        if stage in self._reference_loss:
            metrics[f"{stage}/reference/loss"] = torch.tensor(self._reference_loss[stage])
        confidence = torch.cat([c for c, _ in calibration])
        correct = torch.cat([k for _, k in calibration]).float()
        metrics[f"{stage}/ece"] = _ece(strategy, confidence, correct, loss.device)
        metrics.update(self._sample_metrics(module, stage))
        module.log_dict({k: v.float() for k, v in metrics.items()}, sync_dist=False)
        if module.trainer.is_global_zero and getattr(module, "log_figures", True):
            self._log_figures(module, stage, confidence, correct)

    @torch.no_grad()
    def _sample_metrics(self, module: Any, stage: str, samples: int = 2) -> dict[str, Tensor]:
        """Valid-word rate (see :func:`valid_word_rate`) and distinct-2 of seeded samples from the validation prompts,
        for the policy each time and, once, for the reference and for the real text that follows each prompt."""
        if self._judge_prompts is None:
            return {}
        device = next(module.policy.parameters()).device
        prompts, real = (t.to(device) for t in self._judge_prompts)
        new_tokens = real.shape[1]
        out: dict[str, Tensor] = {}

        def judge(model: Any) -> tuple[float, float]:
            gen = torch.Generator(device="cpu").manual_seed(1234)
            ids = sample(
                model,
                prompts.repeat_interleave(samples, dim=0),
                new_tokens,
                self.n_vocab,
                self.block_size,
                generator=gen if device.type == "cpu" else None,
            )
            texts = [self.tokenizer.decode(r) for r in ids]
            return float(valid_word_rates(texts, self.words).mean()), sum(
                distinct_2(complete_words(t)) for t in texts
            ) / len(texts)

        rate, distinct = judge(module.policy)
        out[f"{stage}/valid_words"], out[f"{stage}/distinct_2"] = torch.tensor(rate), torch.tensor(distinct)
        if f"{stage}/real" not in self._fixed:
            self._fixed[f"{stage}/real"] = float(
                valid_word_rates([self.tokenizer.decode(r) for r in real], self.words).mean()
            )
            if module.reference is not None:
                self._fixed[f"{stage}/reference"] = judge(module.reference)[0]
        out[f"{stage}/real/valid_words"] = torch.tensor(self._fixed[f"{stage}/real"])
        if f"{stage}/reference" in self._fixed:
            out[f"{stage}/reference/valid_words"] = torch.tensor(self._fixed[f"{stage}/reference"])
        return out

    def _log_figures(self, module: Any, stage: str, confidence: Tensor, correct: Tensor) -> None:
        from prefalign.viz.figures import calibration_figure
        from prefalign.viz.images import log_figure
        from prefalign.viz.tables import log_table

        trainer, step = module.trainer, module.global_step
        log_figure(
            trainer,
            f"{stage}/calibration",
            calibration_figure(confidence, correct, title=f"{stage} next-character calibration"),
            step,
        )
        device = next(module.policy.parameters()).device
        rows, samples = [], []
        generator = torch.Generator(device="cpu").manual_seed(0)
        for prompt in self.eval_prompts:
            try:
                ids = self.tokenizer.encode(prompt, what=f"eval prompt {prompt!r}")[-self.block_size :].to(device)
            except ValueError:
                continue  # a prompt with characters this text lacks: skipped, not fatal
            with torch.no_grad():
                logits = module.policy(ids[None])[0, -1, : self.n_vocab].float()  # the character after the whole prompt
                top = torch.softmax(logits, -1).topk(min(5, self.n_vocab))
            rows += [
                [prompt, rank + 1, self.tokenizer.decode([int(i)]), round(float(p), 4)]
                for rank, (p, i) in enumerate(zip(top.values, top.indices))
            ]
            out = sample(
                module.policy,
                ids[None],
                self.eval_new_tokens,
                self.n_vocab,
                self.block_size,
                0.8,
                None,
                generator if device.type == "cpu" else None,
            )
            samples.append([prompt, self.tokenizer.decode(out[0])])
        if rows:
            log_table(trainer, f"{stage}/top_k_next", ["prompt", "rank", "next", "prob"], rows, step)
        if samples:
            log_table(trainer, f"{stage}/samples", ["prompt", "completion"], samples, step)

    def predict_step(self, module: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch["tokens"]
        logps, _ = token_log_probs(module.policy, tokens[:, :1], tokens[:, 1:], self.n_vocab)
        return {"token_logps": logps}

    def predict_summary(self, merged: dict[str, Tensor]) -> str:
        logps = merged["token_logps"]
        return f"{logps.numel()} next-character predictions, mean log-prob {float(logps.mean()):.4f} (loss {float(-logps.mean()):.4f} nats/char)"


def _ece(strategy: Any, confidence: Tensor, correct: Tensor, device: torch.device) -> Tensor:
    """Expected calibration error over every rank's predictions: per-bin sums are reduced, then combined."""
    bins = (confidence * N_BINS).long().clamp(max=N_BINS - 1)
    sums = torch.stack(
        [
            torch.bincount(bins, minlength=N_BINS).double(),
            torch.bincount(bins, confidence.double(), N_BINS),
            torch.bincount(bins, correct.double(), N_BINS),
        ]
    ).to(device)
    count, conf, acc = strategy.reduce(sums, reduce_op="sum")
    return ((conf - acc).abs().sum() / count.sum().clamp(min=1)).float()
