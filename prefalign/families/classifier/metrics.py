"""Evaluation metrics for a classifier on one view (clean or noisy) of a split, via torchmetrics.

State accumulates on the model's device; ``.compute()`` syncs across DDP ranks once per epoch.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)


def classifier_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, macro-F1 and expected calibration error (15 bins, L1), from log-probabilities ``[B, C]``."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "ece": MulticlassCalibrationError(num_classes, n_bins=15, norm="l1"),
        }
    )


class ViewMetrics(nn.Module):
    """Everything reported for the policy on one view: classifier metrics, a confusion matrix, and — when a
    reference exists — the exact KL(policy‖reference), the policy entropy and the fraction of predictions
    that changed relative to the reference. Also keeps (confidence, correct) pairs for the calibration plot."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.classifier = classifier_metrics(num_classes)
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.kl = MeanMetric()
        self.entropy = MeanMetric()
        self.changed = MeanMetric()
        self._confidence: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []

    def update(self, logps: torch.Tensor, target: torch.Tensor, ref_logps: torch.Tensor | None) -> None:
        probs = logps.exp()
        self.classifier.update(probs, target)
        self.confusion.update(logps.argmax(1), target)
        self.entropy.update(-(probs * logps).sum(1))
        if ref_logps is not None:
            self.kl.update((probs * (logps - ref_logps)).sum(1))
            self.changed.update((logps.argmax(1) != ref_logps.argmax(1)).float())
        confidence, predicted = probs.max(1)
        self._confidence.append(confidence.detach())
        self._correct.append((predicted == target).detach())

    def compute(self, with_reference: bool) -> dict[str, torch.Tensor]:
        out = dict(self.classifier.compute())
        out["entropy"] = self.entropy.compute()
        if with_reference:
            out["kl_ref"] = self.kl.compute()
            out["changed_vs_ref"] = self.changed.compute()
        return out

    def calibration_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._confidence:
            return torch.empty(0), torch.empty(0, dtype=torch.bool)
        return torch.cat(self._confidence), torch.cat(self._correct)

    def reset(self) -> None:
        self.classifier.reset()
        self.confusion.reset()
        self.kl.reset()
        self.entropy.reset()
        self.changed.reset()
        self._confidence.clear()
        self._correct.clear()
