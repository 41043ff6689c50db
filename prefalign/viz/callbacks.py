"""Lightning callbacks that look at the policy network: its first-layer filters and its parameter counts."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from prefalign.models import first_conv
from prefalign.viz.figures import filters_figure
from prefalign.viz.images import log_figure

__all__ = ["FilterPlot", "ParameterCount", "policy_of", "parameter_table"]


def policy_of(pl_module: nn.Module) -> nn.Module:
    """The network being aligned: ``pl_module.policy`` when the module has one, else the module itself."""
    policy = getattr(pl_module, "policy", None)
    return policy if isinstance(policy, nn.Module) else pl_module


def parameter_table(model: nn.Module) -> str:
    """A per-parameter table (name, shape, count, trainable) and the totals, like the 1-vs-8 filter notebook's printout."""
    rows = [
        (name, "×".join(map(str, p.shape)) or "scalar", p.numel(), p.requires_grad)
        for name, p in model.named_parameters()
    ]
    total = sum(r[2] for r in rows)
    trainable = sum(r[2] for r in rows if r[3])
    w_name = max([len("parameter"), *(len(r[0]) for r in rows)])
    w_shape = max([len("shape"), *(len(r[1]) for r in rows)])
    w_count = max(len("count"), len(f"{total:,}"))
    lines = [f"{'parameter':<{w_name}}  {'shape':<{w_shape}}  {'count':>{w_count}}  trainable"]
    lines.append("-" * len(lines[0]))
    lines += [f"{n:<{w_name}}  {s:<{w_shape}}  {c:>{w_count},}  {'yes' if t else 'no'}" for n, s, c, t in rows]
    lines.append("-" * len(lines[0]))
    lines.append(f"{type(model).__name__}: {total:,} parameters ({trainable:,} trainable)")
    return "\n".join(lines)


class FilterPlot(pl.Callback):
    """Plot the first conv layer's filters of the policy at the end of fit (and every ``every_n_epochs`` if > 0).

    The figure goes to every logger through :func:`prefalign.viz.images.log_figure` under ``filters/first_conv``
    (a PNG ``images/filters_first_conv_step<N>.png`` for CSV or no logger). Backbones without a conv (MLP) are skipped.
    """

    def __init__(self, every_n_epochs: int = 0) -> None:
        super().__init__()
        self.every_n_epochs = every_n_epochs

    def _plot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
        if not trainer.is_global_zero:
            return []
        model = policy_of(pl_module)
        conv = first_conv(model)
        if conv is None:
            rank_zero_info(f"FilterPlot: {type(model).__name__} has no Conv2d layer; no filter plot.")
            return []
        fig = filters_figure(conv.weight, title=f"{type(model).__name__} first conv, epoch {trainer.current_epoch}")
        return log_figure(trainer, "filters/first_conv", fig, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._plot(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plot(trainer, pl_module)


class ParameterCount(pl.Callback):
    """Print (rank zero) the policy's parameters layer by layer with shapes and counts, and the total."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info(parameter_table(policy_of(pl_module)))
