"""HFCausalLMFamily: pretrained Hugging Face causal LMs on TRL-format preference data, or on prompts for online RL."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from prefalign.families.base import Forward, ModelFamily, ResponseLogps, Rollout, masked_mean
from prefalign.families.hf.rollout import SamplingSettings, completion_metrics, sample_completions, stop_token_ids
from prefalign.families.sequences import (
    gather_token_logps,
    reduce_sequences,
    shared_lengths,
    split_sums,
    wpo_token_logweights,
)
from prefalign.objectives import SFT
from prefalign.objectives.base import PairLogps
from prefalign.validation import check_in_range

PROMPT_DATA_NEEDED = (
    "PPO-lite on a Hugging Face model samples from prompts: set data.class_path to "
    "prefalign.data.hf.TRLPromptDataModule (prompt-only data in TRL's format)."
)


def sequence_batch(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, completion_mask) ``[N, T]`` of a batch in TRL's collated layout, or of a pretraining
    batch ``{"tokens": [B, T + 1]}`` (every token after the first is the response, no padding; as the char LM)."""
    if "tokens" in batch:
        ids = batch["tokens"]
        completion = torch.ones_like(ids, dtype=torch.bool)
        completion[:, 0] = False
        return ids, torch.ones_like(ids), completion
    return batch["input_ids"], batch["attention_mask"], batch["completion_mask"].bool()


class HFCausalLMFamily(ModelFamily):
    """Causal LMs from the Hugging Face hub or a ``save_pretrained`` directory (:class:`~prefalign.models.HFCausalLM`),
    trained on data from :class:`~prefalign.data.hf.TRLPreferenceDataModule`, with TRL's numbers.

    - A preference batch is TRL's (``DataCollatorForPreference``): ``input_ids``, ``attention_mask`` and
      ``completion_mask`` ``[2B, T]``, the B chosen sequences (prompt + chosen) then the B rejected ones, right-padded;
      chosen and rejected run through the model in one forward. A response's log-prob is the fp32 sum of its
      completion tokens' log-probs (prompt and padding masked, TRL's ``logps``), their mean for objectives defined on
      it (SimPO, ORPO), or LD-DPO's re-weighted sum; token counts travel along (IPO and ``sigmoid_norm`` divide each
      log-ratio by them, as TRL 1.16). Log-probs come from :meth:`HFCausalLM.completion_logps`: the LM head runs on
      completion positions only, in checkpointed chunks, so no ``[2B, T, V]`` logits are built (TRL's fused LM head
      does the same); the full log-softmax is taken only when WPO asks for it, or for a compiled forward.
    - An unpaired batch (KTO/BCO; ``{prompt, completion, label}`` data) holds B sequences and ``desirable``.
    - A pretraining batch ``{"tokens": [B, T + 1]}`` is SFT on token windows (every token after the first).
    - Data modules: one with ``prepare(tokenizer)`` is handed the model's tokenizer before training
      (:meth:`check_config`); one with ``precompute_reference(policy, reference_sums, trainer)`` is asked to cache the
      reference's log-probs (:meth:`on_fit_start`, once the models are on their devices).
    - Cached reference log-probs in the batch (``ref_chosen_head``/``_tail``..., computed once by the data module,
      see :meth:`precompute_reference`) replace the reference's forward unless ``recompute_reference``.

    - A prompt batch (``prompt_ids``/``prompt_mask`` left-padded, ``row``; from
      :class:`~prefalign.data.hf.TRLPromptDataModule`) is for online RL (PPO-lite as TRL's GRPO): :meth:`rollout`
      samples ``k`` completions per prompt with ``transformers``' ``generate`` (:mod:`prefalign.families.hf.rollout`),
      and :meth:`response_logps` scores them with the training forward (completion positions only, logits divided by
      the sampling temperature as TRL does), so the old log-probs are the first update's exactly.

    Capabilities: ``true_logprob``, ``token_lengths``, ``sampling``; ``wpo_weights`` (the full log-softmax is taken only
    when WPO asks). Not ``exact_kl`` (a KL over a 50k-token vocabulary at every position costs two ``[2B, T, V]`` fp32
    tensors per step): PPO-lite estimates its KL from the sampled tokens (k3, TRL's), and an objective needing the
    exact KL is refused with the reason.

    Evaluation: on validation/test batches the objective's own loss and metrics (``val/loss``, ``val/rewards/*``,
    ``val/logps/*``: TRL's ``eval_*``), or, on pretraining windows, the mean token NLL (``val/loss``, ``val/ppl``), or,
    on prompt batches, the rewards and lengths of ``k`` sampled completions per prompt (``val/reward``, ...).

    Args (sampling, for PPO-lite; TRL ``GRPOConfig``'s names in brackets):
        max_new_tokens: the longest completion (``max_completion_length``).
        temperature: sampling temperature (``temperature``); log-probs are of the tempered distribution, as TRL's.
        top_p: nucleus sampling (``top_p``).
        top_k: keep the k most likely tokens; None: all (``top_k``; TRL's 0).
        min_p: minimum token probability relative to the most likely (``min_p``).
        repetition_penalty: ``repetition_penalty``.
        generation_kwargs: any other ``transformers.GenerationConfig`` argument (``generation_kwargs``).
        mask_truncated_completions: leave completions that hit ``max_new_tokens`` out of the loss
            (``mask_truncated_completions``).

    Args (paired batches: training, reference caching, evaluation; the numbers are unchanged up to float rounding):
        share_prompt: run each pair's prompt once, chosen and rejected after it in one row whose attention mask
            keeps them apart (:func:`~prefalign.models.hf_logps.pair_completion_token_logps`). Every scored token
            sees the context and positions of its own row, so the log-probs, the loss and its gradient are those of
            TRL's two rows per pair, without running the prompt twice. Applies to models with ``sdpa``/``eager``
            attention and no sliding-window layers, on batches whose pairs share their prompt tokens (TRL's
            ``keep_start`` truncation); other batches take the plain path.
        length_buckets: run a batch's rows (packed pairs, or plain rows) in up to this many forwards of similar
            lengths, each padded only to its own longest row (TRL pads every row to the batch's longest). The
            outputs are gathered back and the loss built once: one backward, the padded batch's gradient. 1: one
            forward. Under a sharded strategy (FSDP) every rank runs the same number of forwards as long as
            ``length_buckets`` ≤ the pairs per rank.
    """

    capabilities = frozenset({"true_logprob", "token_lengths", "wpo_weights", "sampling"})
    summary_keys = ("loss", "rewards/accuracies", "rewards/margins")
    main_metric = "val/loss"
    # TRL's GRPO names for the mean per-token KL and the clip ratios
    metric_names = {"ppo/kl": "kl"} | {
        f"ppo/clip_ratio/{s}_mean": f"clip_ratio/{s}_mean" for s in ("low", "high", "region")
    }

    def __init__(
        self,
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        generation_kwargs: dict[str, Any] | None = None,
        mask_truncated_completions: bool = False,
        share_prompt: bool = True,
        length_buckets: int = 2,
    ) -> None:
        super().__init__()
        check_in_range("length_buckets", length_buckets, 1)
        self.share_prompt = share_prompt
        self.length_buckets = length_buckets
        check_in_range("max_new_tokens", max_new_tokens, 1)
        check_in_range("temperature", temperature, 0.0, low_open=True)
        check_in_range("top_p", top_p, 0.0, 1.0, low_open=True)
        self.sampling = SamplingSettings(
            max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, dict(generation_kwargs or {})
        )
        self.mask_truncated_completions = mask_truncated_completions
        self._sums: dict[str, dict[str, Tensor]] = {}  # per stage: running sums of the evaluation metrics
        self._generation: tuple[Any, list[int], list[int]] | None = None  # (config, stop ids, stop + pad ids)

    # ------------------------------------------------------------------ lifecycle
    def check_config(self, policy: nn.Module, datamodule: Any) -> None:
        if not hasattr(policy, "load_tokenizer"):
            raise ValueError(
                f"{type(self).__name__} trains Hugging Face causal LMs: set model.backbone to "
                f"prefalign.models.HFCausalLM (got {type(policy).__name__})."
            )
        # The seam with data modules: one with ``prepare(tokenizer)`` gets the model's tokenizer here, before the
        # trainer starts, and loads and tokenizes its data now, so bad data is reported before any work with nothing written.
        if hasattr(datamodule, "prepare"):
            datamodule.prepare(policy.load_tokenizer())

    def check_objective(self, objective: nn.Module, datamodule: Any) -> None:
        rl = getattr(objective, "requires", frozenset()) >= {"sampling"}
        if rl and not hasattr(datamodule, "rows"):
            raise ValueError(PROMPT_DATA_NEEDED)
        if not rl and hasattr(datamodule, "rows"):  # SFT, KTO and the DPO family all read responses from the data
            raise ValueError(
                f"objective {type(objective).__name__} trains on the data's responses, and {type(datamodule).__name__} holds "
                "prompts only: set data.class_path to prefalign.data.hf.TRLPreferenceDataModule (or the objective to "
                "prefalign.objectives.PPOLite)."
            )

    def on_fit_start(self, module: Any) -> None:
        # Reference log-probs once, on disk, when the reference is frozen and the data fixed (TRL's
        # precompute_ref_log_probs, with prefalign's pair cache): the data module owns the cache. Here rather than in
        # setup: the reference is on its device by now (not the CPU), and sharded under FSDP.
        datamodule = module.datamodule
        if (
            hasattr(datamodule, "precompute_reference")
            and module.reference is not None
            and module.objective.needs_reference
            and not module.recompute_reference
        ):
            datamodule.precompute_reference(
                module.policy, lambda batch: self.reference_sums(module.reference, batch), module.trainer
            )

    # ------------------------------------------------------------------ log-probs
    def token_logps(
        self, model: Forward, batch: dict[str, Tensor], with_dist: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(per-token log-probs ``[N, T-1]``, completion mask ``[N, T-1]`` (of the predicted tokens), log-softmax or None)."""
        ids, attention, completion = sequence_batch(batch)
        if not with_dist and hasattr(model, "completion_logps"):
            # Completion positions only, through the LM head in checkpointed chunks: no [N, T, V] logits (big
            # vocabularies). A paired batch may share each pair's prompt, and preference rows run in length buckets
            # (class docstring); pretraining windows are all one length.
            paired = "tokens" not in batch and "desirable" not in batch
            fast = (
                {}
                if "tokens" in batch
                else {"share_prompt": paired and self.share_prompt, "buckets": self.length_buckets}
            )
            return model.completion_logps(ids, attention, completion, **fast), completion[:, 1:], None
        logits = model(ids, attention)[:, :-1]
        tokens, dist = gather_token_logps(logits, ids[:, 1:], with_dist)
        return tokens * completion[:, 1:], completion[:, 1:], dist

    def reference_sums(self, reference: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The reference's split sums per sequence (what the cache holds: any reduction can be made from them)."""
        with torch.no_grad():
            tokens, mask, _ = self.token_logps(reference, batch)
        shared = shared_lengths(mask, None if "desirable" in batch else len(mask) // 2)
        head, tail = split_sums(tokens, mask, shared)
        return {"ref_head": head, "ref_tail": tail}

    def pair_logps(
        self,
        policy: Forward,
        reference: nn.Module | None,
        batch: dict[str, Tensor],
        recompute_reference: bool = False,
        length_normalized: bool = False,
        wpo_weights: bool = False,
        ld_alpha: float | None = None,
    ) -> PairLogps:
        paired = "tokens" not in batch and "desirable" not in batch
        tokens, mask, dist = self.token_logps(policy, batch, with_dist=wpo_weights)
        n = len(mask) // 2 if paired else len(mask)
        lengths = mask.sum(-1).float()
        shared = shared_lengths(mask, n if paired else None)
        head, tail = split_sums(tokens, mask, shared)
        logps = reduce_sequences(head, tail, lengths, length_normalized, ld_alpha)
        ref = None
        if "ref_head" in batch and not recompute_reference:
            ref = reduce_sequences(
                batch["ref_head"].float(), batch["ref_tail"].float(), lengths, length_normalized, ld_alpha
            )
        elif reference is not None:
            sums = self.reference_sums(reference, batch)
            ref = reduce_sequences(sums["ref_head"], sums["ref_tail"], lengths, length_normalized, ld_alpha)
        weights = masked_mean(wpo_token_logweights(tokens.detach(), dist.detach()), mask) if wpo_weights else None

        def split(x: Tensor | None, second: bool) -> Tensor | None:
            if x is None or (second and not paired):
                return None
            return x[n:] if second else x[:n]

        return PairLogps(
            policy_chosen=split(logps, False),
            policy_rejected=split(logps, True),
            reference_chosen=split(ref, False),
            reference_rejected=split(ref, True),
            desirable=batch.get("desirable"),
            chosen_wpo_logweight=split(weights, False),
            rejected_wpo_logweight=split(weights, True),
            chosen_length=split(lengths, False),
            rejected_length=split(lengths, True),
        )

    # ------------------------------------------------------------------ RL (PPO-lite / GRPO)
    def _generation_setup(self, model: Any) -> tuple[Any, list[int], list[int]]:
        if self._generation is None:  # once per run: the tokenizer is read from the model's directory
            tokenizer = model.load_tokenizer()
            stops = stop_token_ids(model.model, tokenizer)
            config = self.sampling.generation_config(tokenizer, stops)
            self._generation = (config, stops, [*stops, tokenizer.pad_token_id])
        return self._generation

    @torch.no_grad()
    def sample(self, policy: Forward, batch: dict[str, Tensor], k: int) -> Rollout:
        """``k`` completions per prompt and their metrics (``completions/*``), without old log-probs."""
        if "prompt_ids" not in batch:
            raise ValueError(PROMPT_DATA_NEEDED)
        model = getattr(policy, "_orig_mod", policy)  # a torch.compile-d forward: generate with the module itself
        config, stops, stop_and_pad = self._generation_setup(model)
        prompts, prompt_mask = batch["prompt_ids"].repeat_interleave(k, 0), batch["prompt_mask"].repeat_interleave(k, 0)
        completions, mask = sample_completions(model, prompts, prompt_mask, config, stops, config.pad_token_id)
        metrics, truncated = completion_metrics(completions, mask, stop_and_pad)
        sampled = mask  # what the completion text is; the loss mask may drop truncated completions
        if self.mask_truncated_completions:
            mask = mask & ~truncated.unsqueeze(1)
        b = len(batch["prompt_ids"])
        return Rollout(
            batch={**batch, "completion_mask": sampled.view(b, k, -1)},
            responses=completions.view(b, k, -1),
            mask=mask.view(b, k, -1),
            old_logps=torch.empty(0),
            metrics=metrics,
        )

    @torch.no_grad()
    def rollout(self, policy: Forward, batch: dict[str, Tensor], k: int) -> Rollout:
        rollout = self.sample(policy, batch, k)
        rollout.old_logps = self.response_logps(policy, rollout).tokens
        return rollout

    def response_logps(self, model: Forward, rollout: Rollout) -> ResponseLogps:
        """Token log-probs ``[B, k, C]`` of the completions (0 where masked): one forward over prompt + completion,
        the prompt's left padding and everything after a completion's stop token masked out of attention, positions
        counted over real tokens (as ``generate`` counts them), logits divided by the sampling temperature."""
        b, k, c = rollout.responses.shape
        prompt_mask = rollout.batch["prompt_mask"].repeat_interleave(k, 0)
        mask = rollout.batch.get("completion_mask", rollout.mask).reshape(b * k, c)
        ids = torch.cat([rollout.batch["prompt_ids"].repeat_interleave(k, 0), rollout.responses.reshape(b * k, c)], 1)
        attention = torch.cat([prompt_mask, mask.long()], 1)
        scored = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), mask], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        temperature = self.sampling.temperature
        if hasattr(model, "completion_logps"):
            tokens = model.completion_logps(ids, attention, scored, temperature=temperature, position_ids=positions)
        else:  # a plain forward (logits): the same numbers through the full [N, T, V] logits
            tokens, _ = gather_token_logps(model(ids, attention)[:, :-1] / temperature, ids[:, 1:])
            tokens = tokens * scored[:, 1:]
        return ResponseLogps(tokens[:, -c:].reshape(b, k, c) * rollout.mask)

    def _eval_prompts(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        objective = module.objective
        rollout = self.sample(module.policy_forward, batch, getattr(objective, "k", 1))
        reward = getattr(objective, "reward", None)
        if reward is not None:
            with torch.no_grad():
                reward(rollout)  # records reward, reward_std and rewards/<function>/* in rollout.metrics
        rows = float(len(batch["prompt_ids"]))
        values = {k: v.detach().float() * rows for k, v in rollout.metrics.items()}
        self._add(stage, values | {"rows": torch.tensor(rows)})

    # ------------------------------------------------------------------ evaluation
    def eval_step(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        if "prompt_ids" in batch:
            self._eval_prompts(module, batch, stage)
            return
        objective = module.objective
        if "tokens" in batch or isinstance(objective, SFT) or not hasattr(objective, "check"):
            tokens, mask, _ = self.token_logps(module.policy, batch)
            self._add(stage, {"nll_sum": -(tokens.float() * mask).sum(), "tokens": mask.sum().float()})
            return
        reference = module.reference if objective.needs_reference else None
        extra = {"ld_alpha": objective.ld_alpha} if getattr(objective, "ld_alpha", None) is not None else {}
        out = objective(self.pair_logps(module.policy, reference, batch, True, objective.length_normalized, **extra))
        values = {"loss": out.loss.detach(), **out.metrics}
        self._add(
            stage,
            {k: v.detach().float() * len(batch["input_ids"]) for k, v in values.items()}
            | {"rows": torch.tensor(float(len(batch["input_ids"])))},
        )

    def _add(self, stage: str, values: dict[str, Tensor]) -> None:
        sums = self._sums.setdefault(stage, {})
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v.detach().cpu()

    def eval_epoch_end(self, module: Any, stage: str) -> None:
        sums = self._sums.pop(stage, None)
        if not sums:
            return
        # Sums and counts over every rank, then one division: each row (token) counts once however the unpadded
        # evaluation shards split (a mean of per-rank means would weigh a rank's rows by its shard's size). Under
        # FSDP every rank evaluates every row: the totals are W times each rank's, and the ratios the same.
        keys = sorted(sums)
        reduced = module.trainer.strategy.reduce(
            torch.stack([sums[k] for k in keys]).to(module.device), reduce_op="sum"
        )
        totals = dict(zip(keys, reduced.cpu()))
        if "nll_sum" in totals:
            loss = totals["nll_sum"] / totals["tokens"].clamp(min=1)
            module.log_dict({f"{stage}/loss": loss, f"{stage}/ppl": loss.exp()})
            return
        rows = totals.pop("rows")
        module.log_dict({f"{stage}/{k}": v / rows for k, v in totals.items()})

    def teardown(self, stage: str) -> None:
        self._sums.clear()
