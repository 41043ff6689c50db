"""Training callbacks that are not figures (those live in :mod:`prefalign.viz.callbacks`)."""

from prefalign.callbacks.iterative_mining import IterativeMining

__all__ = ["IterativeMining"]
