"""Training callbacks that are not figures (those live in :mod:`prefalign.viz.callbacks`)."""

from prefalign.callbacks.iterative_mining import IterativeMining
from prefalign.callbacks.progress import EpochProgress

__all__ = ["EpochProgress", "IterativeMining"]
