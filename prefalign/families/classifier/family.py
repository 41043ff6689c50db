"""The classifier family: a response is one class label, so a log-prob is one entry of a log-softmax."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prefalign.families.base import Forward, ResponseLogps, Rollout
from prefalign.families.classifier.evaluation import ClassifierEvaluation
from prefalign.objectives.base import PairLogps
from prefalign.objectives.ppo import exact_kl


def log_probs(model: Forward, x: Tensor) -> Tensor:
    """``[B, C]`` log-probabilities; log-softmax in fp32 whatever the autocast precision."""
    return F.log_softmax(model(x).float(), dim=1)


def _gather(logps: Tensor, labels: Tensor) -> Tensor:
    return logps.gather(1, labels.unsqueeze(1)).squeeze(1)


@torch.no_grad()
def _wpo_logweight(logps: Tensor, labels: Tensor) -> Tensor:
    """WPO's log weight of a one-label response: log p(y) − log Σ_c p(c)² (arXiv:2406.11827, Eq. 2 with sampled alignment)."""
    return _gather(logps, labels).float() - torch.logsumexp(2 * logps.float(), dim=1)


class ClassifierFamily(ClassifierEvaluation):
    """Image classifiers (the seed CNN, LeNet, the 1-vs-8 CNN, MLPs): ``backbone(x) -> logits [B, C]``.

    Batches: SFT ``{"x", "y"}``; preference ``{"x", "chosen", "rejected"}`` plus ``ref_logps [B, C]`` when the
    reference's log-probs were cached at mining time. With ten classes everything is exact: the KL to the
    reference is summed over the classes, and PPO-lite's rollout samples k labels per image from the full
    distribution (one forward pass per image, whatever k).

    Evaluation (:class:`ClassifierEvaluation`): accuracy, macro-F1, ECE, exact KL, entropy, fraction of
    predictions changed, on the clean and noisy views of each split, plus confusion matrices, calibration
    curves and the mined-pairs grid.

    Args:
        num_classes: classes the backbone predicts; default: the data module's ``num_classes``.
    """

    capabilities = frozenset({"true_logprob", "exact_kl", "sampling", "wpo_weights"})

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__(num_classes)

    def pair_logps(
        self,
        policy: Forward,
        reference: nn.Module | None,
        batch: dict[str, Tensor],
        recompute_reference: bool = False,
        length_normalized: bool = False,
        wpo_weights: bool = False,
    ) -> PairLogps:
        # One label per response: the sum and the mean of its token log-probs are the same number.
        x = batch["x"]
        chosen = batch["chosen"] if "chosen" in batch else batch["y"]
        rejected = batch.get("rejected")
        logps = log_probs(policy, x)
        ref = None
        if "ref_logps" in batch and not recompute_reference:
            ref = batch["ref_logps"]  # computed once at mining time
        elif reference is not None:
            with torch.no_grad():
                ref = log_probs(reference, x)
        return PairLogps(
            policy_chosen=_gather(logps, chosen),
            policy_rejected=_gather(logps, rejected) if rejected is not None else None,
            reference_chosen=_gather(ref, chosen) if ref is not None else None,
            reference_rejected=_gather(ref, rejected) if ref is not None and rejected is not None else None,
            kl=exact_kl(logps, ref) if ref is not None else None,
            desirable=batch.get("desirable"),
            chosen_wpo_logweight=_wpo_logweight(logps, chosen) if wpo_weights else None,
            rejected_wpo_logweight=_wpo_logweight(logps, rejected) if wpo_weights and rejected is not None else None,
        )

    @torch.no_grad()
    def rollout(self, policy: Forward, batch: dict[str, Tensor], k: int) -> Rollout:
        full = log_probs(policy, batch["x"])
        samples = torch.multinomial(full.exp(), k, replacement=True)  # [B, k], with replacement
        labels = batch["y"] if "y" in batch else batch["chosen"]
        return Rollout(
            batch={**batch, "y": labels},
            responses=samples.unsqueeze(-1),
            mask=torch.ones_like(samples, dtype=torch.bool).unsqueeze(-1),
            old_logps=full.gather(1, samples).unsqueeze(-1),
        )

    def response_logps(self, model: Forward, rollout: Rollout) -> ResponseLogps:
        full = log_probs(model, rollout.batch["x"])  # one forward per image serves its k samples
        tokens = full.gather(1, rollout.responses[..., 0]).unsqueeze(-1)
        return ResponseLogps(tokens=tokens, dist=full[:, None, None, :])

    def setup(self, module: Any, stage: str) -> None:
        datamodule = module.datamodule
        data_classes = getattr(datamodule, "num_classes", None)
        if self.num_classes is not None and data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"the data has {data_classes} classes but model.family.num_classes is {self.num_classes}; make them agree."
            )
        self.build_metrics(self.num_classes or data_classes or 10)
