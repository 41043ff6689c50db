"""A run's results: ``<run>/results_<stage>.json`` and the short policy-versus-reference summary printed after a stage."""

from __future__ import annotations

import json
from typing import Any

from prefalign.loggers import run_dir


def write_results(trainer: Any, model: Any, stage: str, fit_seconds: float | None = None) -> None:
    """Write the ``<stage>/...`` metrics Lightning collected to ``results_<stage>.json`` (with the objective, the global
    step and, after a fit, the fit's wall seconds) and print the family's summary keys for policy and reference."""
    folder = run_dir(trainer)  # a broadcast under DDP: every rank asks, before the rank-zero check
    if not trainer.is_global_zero:
        return
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
    if not metrics:
        return
    results = {
        "stage": stage,
        "objective": type(model.objective).__name__,
        "metrics": metrics,
        "global_step": trainer.global_step,
    }
    if fit_seconds is not None:
        results["fit_seconds"] = round(fit_seconds, 1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"results_{stage}.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    lines = [f"prefalign {stage} results ({results['objective']}) — {folder}"]
    for who, prefix in (("policy", f"{stage}/"), ("reference", f"{stage}/reference/")):
        row = {k: metrics.get(prefix + k) for k in model.family.summary_keys}
        if any(v is not None for v in row.values()):
            lines.append(f"  {who:<9} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if v is not None))
    print("\n".join(lines), flush=True)


__all__ = ["write_results"]
