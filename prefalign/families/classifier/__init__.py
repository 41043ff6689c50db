"""The classifier family (the first one): a response is one class label."""

from prefalign.families.classifier.family import ClassifierFamily, log_probs

__all__ = ["ClassifierFamily", "log_probs"]
