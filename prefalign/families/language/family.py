"""LanguageFamily: sequences of characters; a response is a masked run of tokens after a prompt."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prefalign.families.base import Forward, ResponseLogps, Rollout, masked_mean, masked_sum
from prefalign.families.language.evaluation import LanguageEvaluation
from prefalign.families.language.sequences import exact_token_kl, token_log_probs, wpo_token_logweights
from prefalign.families.sequences import reduce_sequences, shared_lengths, split_sums
from prefalign.models.generation import sample
from prefalign.objectives.base import PairLogps
from prefalign.validation import check_in_range


class LanguageFamily(LanguageEvaluation):
    """Character-level decoders (:class:`~prefalign.models.TinyTransformer`): ``model(ids [B, T]) -> logits [B, T, V]``.

    - A pretraining batch ``{"tokens": [B, T + 1]}`` is one response per window (every next character after the
      first), so SFT on it is the usual next-character cross-entropy.
    - A preference batch holds ``prompt [B, P]``, ``chosen``/``rejected [B, R]`` and their masks: chosen and rejected
      run through the model in one forward; a response's log-prob is the fp32 sum of its unmasked token
      log-probs (prompt and padding excluded, as TRL), their mean for objectives defined on it (SimPO, ORPO), or
      LD-DPO's re-weighted sum; token counts travel along (IPO and SigmoidNorm normalise per token, as TRL).
    - The KL to the reference is exact: per token, over the whole vocabulary, summed over the response.
    - RL: :meth:`rollout` samples ``k`` continuations of ``max_new_tokens`` characters per prompt, all at once.
    - With GPT-2's BPE (``tokenizer: gpt2`` on the model and the data) every "character" here is a BPE token and
      the vocabulary is 50,257 ids. The exact KL and the WPO weights stay exact, over all 50,257 ids: the policy's
      and the reference's full log-softmax are ``[B, R, 50257]`` fp32 each (a DPO batch of 32 pairs × 32 tokens:
      0.4 GB each, plus the KL product and, for the policy, its gradient). Affordable at this scale with small
      batches; the char model's are 600 times smaller.

    Evaluation (:class:`LanguageEvaluation`): loss, perplexity and bits per character on the validation split,
    ECE and a reliability diagram of next-character predictions, a top-k next-character table for fixed prompts
    and sampled text, through every logger.

    Args:
        max_new_tokens: length of sampled continuations (RL rollouts).
        temperature: sampling temperature of rollouts (1: the policy's own distribution, which PPO's ratio assumes).
        top_k: restrict rollouts to the k most likely characters (None: all).
        eval_prompts: prompts for the top-k table and the text samples logged at each validation.
        eval_new_tokens: length of the logged text samples.
    """

    capabilities = frozenset({"true_logprob", "exact_kl", "sampling", "wpo_weights", "token_lengths"})
    summary_keys = ("loss", "bpc", "ece")
    main_metric = "val/loss"

    def __init__(
        self,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_k: int | None = None,
        eval_prompts: tuple[str, ...] = ("To be or not to", "ROMEO.\n", "What is "),
        eval_new_tokens: int = 120,
    ) -> None:
        super().__init__(eval_prompts, eval_new_tokens)
        check_in_range("max_new_tokens", max_new_tokens, 1)
        check_in_range("temperature", temperature, 0.0, low_open=True)
        self.max_new_tokens, self.temperature, self.top_k = max_new_tokens, temperature, top_k

    # ------------------------------------------------------------------ preference training
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
        if "tokens" in batch:  # pretraining: the whole window after its first character is the response
            prompts, chosen = batch["tokens"][:, :1], batch["tokens"][:, 1:]
            chosen_mask, rejected, rejected_mask = torch.ones_like(chosen, dtype=torch.bool), None, None
        else:
            prompts, chosen, chosen_mask = batch["prompt"], batch["chosen"], batch["chosen_mask"]
            rejected, rejected_mask = batch.get("rejected"), batch.get("rejected_mask")
        n = len(prompts)
        both = prompts if rejected is None else torch.cat([prompts, prompts])
        responses = chosen if rejected is None else torch.cat([chosen, rejected])
        masks = chosen_mask if rejected is None else torch.cat([chosen_mask, rejected_mask])
        # The shared reductions (prefalign.families.sequences): sum, mean, or LD-DPO's split at the pair's shared length.
        lengths = masks.sum(-1).float()
        shared = shared_lengths(masks, None if rejected is None else n)

        def reduce(t: Tensor) -> Tensor:
            return reduce_sequences(*split_sums(t, masks, shared), lengths, length_normalized, ld_alpha)

        tokens, dist = token_log_probs(
            policy, both, responses, self.n_vocab, with_dist=reference is not None or wpo_weights
        )
        logps = reduce(tokens)
        ref = kl = None
        if reference is not None:
            with torch.no_grad():
                ref_tokens, ref_dist = token_log_probs(reference, both, responses, self.n_vocab)
            ref = reduce(ref_tokens)
            kl = masked_sum(exact_token_kl(dist.detach(), ref_dist), masks)
        weights = masked_mean(wpo_token_logweights(tokens.detach(), dist.detach()), masks) if wpo_weights else None

        def split(x: Tensor | None, second: bool) -> Tensor | None:
            if x is None or (second and rejected is None):
                return None
            return x[n:] if second else x[:n]

        return PairLogps(
            policy_chosen=split(logps, False),
            policy_rejected=split(logps, True),
            reference_chosen=split(ref, False),
            reference_rejected=split(ref, True),
            kl=split(kl, False),
            desirable=batch.get("desirable"),
            chosen_wpo_logweight=split(weights, False),
            rejected_wpo_logweight=split(weights, True),
            chosen_length=split(lengths, False),
            rejected_length=split(lengths, True),
        )

    # ------------------------------------------------------------------ RL
    @torch.no_grad()
    def rollout(self, policy: Forward, batch: dict[str, Tensor], k: int) -> Rollout:
        prompts = batch["prompt"].repeat_interleave(k, dim=0)  # every prompt × sample in one batch
        responses = sample(
            policy, prompts, self.max_new_tokens, self.n_vocab, self.block_size, self.temperature, self.top_k
        )
        b = len(batch["prompt"])
        rollout = Rollout(
            batch=batch,
            responses=responses.view(b, k, -1),
            mask=torch.ones(b, k, responses.shape[1], dtype=torch.bool, device=responses.device),
            old_logps=torch.empty(0),
        )
        rollout.old_logps = self.response_logps(policy, rollout).tokens
        return rollout

    def response_logps(self, model: Forward, rollout: Rollout) -> ResponseLogps:
        b, k, r = rollout.responses.shape
        tokens, dist = token_log_probs(
            model, rollout.batch["prompt"].repeat_interleave(k, dim=0), rollout.responses.view(b * k, r), self.n_vocab
        )
        return ResponseLogps(tokens.view(b, k, r), dist.view(b, k, r, -1))
