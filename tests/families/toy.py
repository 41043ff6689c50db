"""A tiny test-only model family: a 2-token toy sequence model over synthetic prompts.

It exists to prove that a new family is new files only: model, family adapter, data module and reward live
here, and `prefalign.cli.main` trains it with SFT, DPO and PPO-lite without any edit to the shared core.

Task: the prompt is one token p of a vocabulary of V; the right response is the two tokens (p+1, p+2) mod V.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prefalign.data.batches import TensorBatches
from prefalign.data.mined_pairs import MinedPairs
from prefalign.families.base import ModelFamily, ResponseLogps, Rollout, masked_mean, masked_sum
from prefalign.objectives import PairLogps, RewardFunction, exact_kl

RESPONSE_LEN = 2


class ToySeqModel(nn.Module):
    """A bigram language model: the logits after token ``a`` are row ``a`` of a table (causal by construction)."""

    def __init__(self, vocab: int = 8) -> None:
        super().__init__()
        self.init_args = {"vocab": vocab}
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, tokens: Tensor) -> Tensor:  # [N, L] -> logits [N, L, V] for the next token
        return self.table(tokens)


def right_responses(prompts: Tensor, vocab: int) -> Tensor:
    return torch.stack([(prompts + 1) % vocab, (prompts + 2) % vocab], dim=1)


def response_token_logps(model: Any, prompts: Tensor, responses: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced log-probs of ``responses [N, R]`` after ``prompts [N]``: ``(tokens [N, R], dist [N, R, V])``."""
    inputs = torch.cat([prompts.unsqueeze(1), responses[:, :-1]], dim=1)
    dist = F.log_softmax(model(inputs).float(), dim=-1)
    return dist.gather(-1, responses.unsqueeze(-1)).squeeze(-1), dist


class ToyFamily(ModelFamily):
    """Sequence responses of two tokens with a mask (the second token of a 'short' response is padding)."""

    capabilities = frozenset({"true_logprob", "exact_kl", "sampling"})
    summary_keys = ("reward",)
    main_metric = "val/reward"

    def pair_logps(
        self, policy, reference, batch, recompute_reference=False, length_normalized=False, wpo_weights=False
    ) -> PairLogps:
        reduce = masked_mean if length_normalized else masked_sum
        prompts, chosen, mask_c = batch["prompt"], batch["chosen"], batch["chosen_mask"]
        rejected = batch.get("rejected")
        responses = chosen if rejected is None else torch.cat([chosen, rejected])
        masks = mask_c if rejected is None else torch.cat([mask_c, batch["rejected_mask"]])
        both = prompts if rejected is None else torch.cat([prompts, prompts])
        tokens, dist = response_token_logps(policy, both, responses)  # chosen and rejected in one forward
        logps = reduce(tokens, masks)
        ref = kl = None
        if reference is not None:
            with torch.no_grad():
                ref_tokens, ref_dist = response_token_logps(reference, both, responses)
            ref = reduce(ref_tokens, masks)
            kl = masked_sum(exact_kl(dist, ref_dist), masks)
        n = len(prompts)
        return PairLogps(
            policy_chosen=logps[:n],
            policy_rejected=logps[n:] if rejected is not None else None,
            reference_chosen=ref[:n] if ref is not None else None,
            reference_rejected=ref[n:] if ref is not None and rejected is not None else None,
            kl=kl[:n] if kl is not None else None,
        )

    @torch.no_grad()
    def rollout(self, policy, batch, k) -> Rollout:
        prompts = batch["prompt"].repeat_interleave(k)  # all prompts x samples in one batch
        tokens = [prompts]
        for _ in range(RESPONSE_LEN):
            probs = F.softmax(policy(tokens[-1].unsqueeze(1))[:, -1].float(), dim=-1)
            tokens.append(torch.multinomial(probs, 1).squeeze(1))
        responses = torch.stack(tokens[1:], dim=1).view(len(batch["prompt"]), k, RESPONSE_LEN)
        mask = torch.ones_like(responses, dtype=torch.bool)
        rollout = Rollout(batch=batch, responses=responses, mask=mask, old_logps=torch.empty(0))
        rollout.old_logps = self.response_logps(policy, rollout).tokens
        return rollout

    def response_logps(self, model, rollout) -> ResponseLogps:
        b, k, r = rollout.responses.shape
        tokens, dist = response_token_logps(
            model, rollout.batch["prompt"].repeat_interleave(k), rollout.responses.view(b * k, r)
        )
        return ResponseLogps(tokens.view(b, k, r), dist.view(b, k, r, -1))

    def eval_step(self, module, batch, stage) -> None:
        vocab = module.policy.init_args["vocab"]
        first = module.policy(batch["prompt"].unsqueeze(1))[:, -1].argmax(-1)
        second = module.policy(first.unsqueeze(1))[:, -1].argmax(-1)
        greedy = torch.stack([first, second], dim=1)
        self._hits = getattr(self, "_hits", []) + [(greedy == right_responses(batch["prompt"], vocab)).all(1).float()]

    def eval_epoch_end(self, module, stage) -> None:
        hits = torch.cat(self.__dict__.pop("_hits", [torch.zeros(0)]))
        if not module.trainer.sanity_checking and len(hits):
            module.log(f"{stage}/reward", hits.mean())


class ToyReward(RewardFunction):
    """Number of response tokens that match the right response (0, 1 or 2)."""

    def __init__(self, vocab: int = 8) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, rollout: Rollout) -> Tensor:
        right = right_responses(rollout.batch["prompt"], self.vocab).unsqueeze(1)
        return ((rollout.responses == right) & rollout.mask).float().sum(-1)


class ToyDataModule(MinedPairs, L.LightningDataModule):
    """Prompts 0..V-1 repeated; ``pairs: true`` mines (right ≻ the reference's greedy answer, or a fixed wrong one)."""

    reference_data_keys = ("vocab", "size")

    def __init__(
        self,
        vocab: int = 8,
        size: int = 256,
        batch_size: int = 32,
        pairs: bool = False,
        reference_ckpt: str | None = None,
        cache_dir: str = "artifacts/pairs",
    ) -> None:
        super().__init__()
        self.vocab, self.size, self.batch_size, self.use_pairs = vocab, size, batch_size, pairs
        self.reference_ckpt, self.cache_dir = reference_ckpt, cache_dir
        if pairs:  # only then is it preference data (PreferenceData: pairs, reference_ckpt, mining_stats)
            self.init_mining(reference_ckpt, cache_dir)

    def setup(self, stage: str | None = None) -> None:
        prompts = torch.arange(self.size) % self.vocab
        chosen = right_responses(prompts, self.vocab)
        self.train_data = {
            "prompt": prompts,
            "chosen": chosen,
            "chosen_mask": torch.ones_like(chosen, dtype=torch.bool),
        }
        if self.use_pairs and stage in (None, "fit") and not self.pairs:
            path = self.mining_reference("train it with the toy's SFT run")
            self.pairs = self.cached_pairs(
                "toy", path, {"vocab": self.vocab, "size": self.size}, lambda: self._mine(path)
            )
            self.train_data = {**self.train_data, **{k: self.pairs[k] for k in ("rejected", "rejected_mask")}}

    def _mine(self, path: str) -> dict[str, Tensor]:
        from prefalign.models.loading import load_model

        reference = load_model(path).eval()
        prompts, right = self.train_data["prompt"], self.train_data["chosen"]
        with torch.no_grad():
            first = reference(prompts.unsqueeze(1))[:, -1].argmax(-1)
            greedy = torch.stack([first, reference(first.unsqueeze(1))[:, -1].argmax(-1)], dim=1)
        wrong = torch.stack([(prompts + 3) % self.vocab, (prompts + 4) % self.vocab], dim=1)
        rejected = torch.where((greedy == right).all(1, keepdim=True), wrong, greedy)
        return {"rejected": rejected, "rejected_mask": torch.ones_like(rejected, dtype=torch.bool)}

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self.train_data, self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches({"prompt": torch.arange(self.vocab)}, self.batch_size)

    test_dataloader = val_dataloader
