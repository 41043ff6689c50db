"""Checks of configuration values, shared by objectives, families, data modules and callbacks."""

from __future__ import annotations


def check_in_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Reject out-of-range hyper-parameters at construction time, when the config is still on screen."""
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high or value != value:  # value != value catches NaN
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name}={value} is out of range; expected a value in {lo}, {hi}.")


__all__ = ["check_in_range"]
