"""Log the gradient norm before each optimiser step (Lightning's ``grad_norm`` utility)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import grad_norm


class GradNorm(Callback):
    """Logs ``train/grad_norm`` (the total 2-norm of the policy's gradients, before clipping) on the steps the loggers
    write, so it costs nothing on the others.

    Args:
        norm_type: the p of the p-norm.
    """

    def __init__(self, norm_type: float = 2.0) -> None:
        self.norm_type = norm_type

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if not pl_module.train_logging()[1]:  # the module's rule: only on the steps the loggers write
            return
        norms = grad_norm(pl_module.policy, norm_type=self.norm_type)
        total = norms.get(f"grad_{float(self.norm_type)}_norm_total")
        if total is not None:
            pl_module.log("train/grad_norm", total)
