"""Training callbacks that are not figures (those live in :mod:`prefalign.viz.callbacks`)."""

from prefalign.callbacks.grad_norm import GradNorm
from prefalign.callbacks.iterative_mining import IterativeMining
from prefalign.callbacks.progress import EpochProgress
from prefalign.callbacks.reference_update import ReferenceUpdate
from prefalign.callbacks.validate_at_end import NoValidationInFit, ValidateAtEnd

__all__ = ["EpochProgress", "GradNorm", "IterativeMining", "NoValidationInFit", "ReferenceUpdate", "ValidateAtEnd"]
