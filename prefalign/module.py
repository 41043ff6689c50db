"""AlignmentModule: a trainable policy, a frozen reference, and a pluggable objective."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torch.nn import functional as F

from prefalign.checkpoint import CheckpointError, load_into, load_model, save_weights
from prefalign.data.batches import chunked_forward
from prefalign.metrics import ViewMetrics, classifier_metrics
from prefalign.models import SeedCNN
from prefalign.objectives import SFT, Objective, PairLogps, PPOLite, exact_kl, group_advantages

VIEWS = ("clean", "noisy")
STAGES = ("val", "test")

# Under DDP Lightning suggests sync_dist=True for every epoch-level value; ours are torchmetrics results, already
# reduced over all ranks by .compute(), so the suggestion (one warning per key) does not apply.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test)/", category=PossibleUserWarning)


def _gather(logps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logps.gather(1, labels.unsqueeze(1)).squeeze(1)


class AlignmentModule(L.LightningModule):
    """A trainable policy, an optional frozen reference, and an objective chosen in the config.

    With ``reference_ckpt`` set, the reference is loaded from that weights file, frozen
    (``requires_grad_(False)``, kept in eval mode, run under ``no_grad``) and kept *outside* the module
    tree, so it is never DDP-wrapped, never saved in Lightning checkpoints and never touched by
    ``train()``; the policy starts as an exact copy of it. Without a reference the policy trains from
    its random initialisation (the reference recipe, ``configs/sft.yaml``).

    Args:
        backbone: the policy architecture (default: the seed-000 CNN).
        objective: the loss: ``SFT`` (default), any DPO-family objective, or ``PPOLite``.
        reference_ckpt: weights file of the reference (and the policy's starting point).
        export_path: also write the final policy weights here (the SFT recipe writes the reference here).
        optimizer: optimizer factory (default Adam, lr 1e-3 — the seed's).
        lr_scheduler: optional scheduler factory (stepped every epoch).
        num_classes: classes predicted by the backbone (2 for the 1-vs-8 study).
        recompute_reference: run the reference on every training batch instead of reading the cached
            log-probs (slower; the seed notebook's way; results are identical up to fp noise).
        nan_policy: on a non-finite loss, ``raise`` (checked at every logging step and at epoch end,
            without a per-step host sync) or ``skip`` the step and count it (one sync per step).
        compile: ``torch.compile`` the policy's forward.
        log_figures: log the confusion matrix, calibration curve and mined-pairs grid after evaluation.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        objective: Objective | PPOLite | None = None,
        reference_ckpt: str | None = None,
        export_path: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_classes: int = 10,
        recompute_reference: bool = False,
        nan_policy: Literal["raise", "skip"] = "raise",
        compile: bool = False,
        log_figures: bool = True,
    ) -> None:
        super().__init__()
        self.policy = backbone if backbone is not None else SeedCNN()
        self.objective = objective if objective is not None else SFT()
        if self.objective.needs_reference and reference_ckpt is None:
            raise ValueError(
                f"objective {type(self.objective).__name__} needs a frozen reference: set model.reference_ckpt to a weights file "
                "(train one with `python -m prefalign fit --config configs/sft.yaml`)."
            )
        if nan_policy not in ("raise", "skip"):
            raise ValueError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
        self.reference_ckpt = reference_ckpt
        self.export_path = export_path
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.num_classes = num_classes
        self.recompute_reference = recompute_reference
        self.nan_policy = nan_policy
        self.compile = compile
        self.log_figures = log_figures
        self.is_ppo = isinstance(self.objective, PPOLite)
        self.automatic_optimization = not self.is_ppo
        self.metrics = nn.ModuleDict({f"{s}_{v}": ViewMetrics(num_classes) for s in STAGES for v in VIEWS})
        self.reference_metrics = nn.ModuleDict({f"{s}_{v}": classifier_metrics(num_classes) for s in STAGES for v in VIEWS})
        # Plain attributes (not submodules): the frozen reference and the possibly compiled forward.
        object.__setattr__(self, "_reference", None)
        object.__setattr__(self, "_forward", self.policy)
        self._policy_initialised = False
        self._reference_logged: set[str] = set()
        self._figures_done: set[str] = set()
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)
        self.skipped_steps = 0

    # ------------------------------------------------------------------ reference
    @property
    def reference(self) -> nn.Module | None:
        ref = self._reference
        if ref is not None and next(ref.parameters()).device != self.device:
            ref.to(self.device)
        return ref

    def setup(self, stage: str) -> None:
        if self.reference_ckpt is not None and self._reference is None:
            if not Path(self.reference_ckpt).is_file():
                raise CheckpointError(
                    f"reference checkpoint not found: {self.reference_ckpt}. Train it with "
                    "`python -m prefalign fit --config configs/sft.yaml` (or run an alignment config, which trains it first)."
                )
            reference = load_model(self.reference_ckpt)
            reference.eval().requires_grad_(False)
            object.__setattr__(self, "_reference", reference)
            if not self._policy_initialised:
                # The policy starts as an exact copy (a checkpoint given with --ckpt_path overwrites it afterwards).
                load_into(self.policy, self.reference_ckpt)
        self._policy_initialised = True
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            if getattr(datamodule, "num_classes", self.num_classes) != self.num_classes:
                raise ValueError(f"the data has {datamodule.num_classes} classes but model.num_classes is {self.num_classes}; make them agree.")
            if stage == "fit" and getattr(self.objective, "needs_pairs", False) and not hasattr(datamodule, "pairs"):
                raise ValueError(
                    f"objective {type(self.objective).__name__} trains on preference pairs: use "
                    "data.class_path: prefalign.data.PreferenceDataModule."
                )
        if self.compile and self._forward is self.policy:
            object.__setattr__(self, "_forward", torch.compile(self.policy))

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Policy log-probabilities ``[B, C]``; log-softmax in fp32 whatever the autocast precision."""
        return F.log_softmax(self._forward(x).float(), dim=1)

    @torch.no_grad()
    def reference_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.reference(x).float(), dim=1)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.is_ppo:
            return self._ppo_step(batch)
        x = batch["x"]
        chosen = batch["chosen"] if "chosen" in batch else batch["y"]
        rejected = batch.get("rejected")
        logps = self.log_probs(x)
        ref = None
        if self._reference is not None and (self.objective.needs_reference or "ref_logps" in batch):
            ref = batch["ref_logps"] if ("ref_logps" in batch and not self.recompute_reference) else self.reference_log_probs(x)
        pair = PairLogps(
            policy_chosen=_gather(logps, chosen),
            policy_rejected=_gather(logps, rejected) if rejected is not None else None,
            reference_chosen=_gather(ref, chosen) if ref is not None else None,
            reference_rejected=_gather(ref, rejected) if ref is not None and rejected is not None else None,
            kl=exact_kl(logps, ref) if ref is not None else None,
        )
        out = self.objective(pair)
        loss = self._guard(out.loss)
        if loss is None:
            return None
        show, write = self._train_logging()
        if show or write:
            self.log("train/loss", loss, prog_bar=show)
        if write:
            self.log_dict({f"train/{k}": v for k, v in out.metrics.items()})
            if ref is not None:
                self.log("train/kl_ref", pair.kl.mean())
        return loss

    def _train_logging(self) -> tuple[bool, bool]:
        """(show the loss in the progress bar, write the step's metrics) for the current training step.

        Step metrics are logged only on the steps the loggers write (every ``log_every_n_steps``), so what the
        loggers receive is unchanged, but the other steps skip Lightning's ``self.log`` (about 0.3-1 ms of Python
        per call: most of the framework's per-step overhead) and the ``.item()`` host sync that Lightning applies
        to every ``prog_bar`` value after every batch. With a progress bar shown, the loss is still logged (and
        synced) every step for the display."""
        trainer = self.trainer
        show = trainer.progress_bar_callback is not None
        connector = getattr(trainer, "_logger_connector", None)
        write = bool(getattr(connector, "should_update_logs", True)) or bool(trainer.fast_dev_run)
        return show, write

    def _ppo_step(self, batch: dict[str, torch.Tensor]) -> None:
        objective: PPOLite = self.objective
        optimizer = self.optimizers()
        x = batch["x"]
        labels = batch["y"] if "y" in batch else batch["chosen"]
        with torch.no_grad():
            old_full = self.log_probs(x)
            samples = objective.sample(old_full)
            old = old_full.gather(1, samples)
            rewards = objective.reward(x, samples, labels)
            advantages = group_advantages(rewards)
            ref_full = self.reference_log_probs(x)
        for _ in range(objective.ppo_epochs):
            out = objective.loss(self.log_probs(x), samples, old, advantages, ref_full)
            loss = self._guard(out.loss)
            if loss is None:
                continue
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        show, write = self._train_logging()
        if show or write:
            self.log("train/loss", out.loss.detach(), prog_bar=show)
            self.log("ppo/reward_mean", rewards.mean(), prog_bar=show)
        if write:
            self.log_dict({k if k.startswith("ppo/") else f"train/{k}": v for k, v in out.metrics.items()})

    def on_train_epoch_end(self) -> None:
        if self.is_ppo:
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()

    def _guard(self, loss: torch.Tensor) -> torch.Tensor | None:
        if self.nan_policy == "skip":
            bad = self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False)
            if bad:
                self.skipped_steps += 1
                self.log("train/skipped_nonfinite_steps", float(self.skipped_steps))
                return None
            return loss
        self._nonfinite |= ~torch.isfinite(loss.detach())
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.nan_policy != "raise":
            return
        last = batch_idx + 1 == self.trainer.num_training_batches
        if (last or (batch_idx + 1) % self.trainer.log_every_n_steps == 0) and bool(self._nonfinite):
            raise FloatingPointError(
                f"non-finite loss during epoch {self.current_epoch} (at or before batch {batch_idx}). Lower the learning rate, "
                "enable trainer.gradient_clip_val, check the data for NaNs, or set model.nan_policy=skip to skip such steps."
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.policy.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        y = batch["y"]
        n = len(y)
        x = torch.cat([batch["x_clean"], batch["x_noisy"]])
        logps = chunked_forward(self.log_probs, x)  # in cache-sized chunks on CPU
        ref = self._eval_reference_log_probs(batch, x) if self._reference is not None else None
        for i, view in enumerate(VIEWS):
            part = slice(i * n, (i + 1) * n)
            self.metrics[f"{stage}_{view}"].update(logps[part], y, ref[part] if ref is not None else None)
            if ref is not None and stage not in self._reference_logged:
                self.reference_metrics[f"{stage}_{view}"].update(ref[part].exp(), y)

    def _eval_reference_log_probs(self, batch: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The frozen reference's log-probs on an evaluation batch, computed once per batch of fixed data.

        Evaluation batches are plain slices (views) of the datamodule's split tensors, so a batch is identified by
        (its base tensors, offset, length) and the reference's answer for it never changes: later validation
        epochs reuse it instead of running the reference again. The cache holds the base tensors, so their ids
        cannot be reused by other data; batches that are copies (shuffled or DDP-sharded) are not cached."""
        views = [batch["x_clean"], batch["x_noisy"]]
        bases = [v._base for v in views]
        if any(b is None for b in bases):
            return chunked_forward(self.reference_log_probs, x)
        key = (tuple(id(b) for b in bases), tuple(v.storage_offset() for v in views), len(x), torch.is_autocast_enabled(x.device.type))
        cache = self.__dict__.setdefault("_eval_ref_cache", {})
        hit = cache.get(key)
        if hit is None or hit[0] is not bases[0] or hit[1] is not bases[1]:
            hit = cache[key] = (bases[0], bases[1], chunked_forward(self.reference_log_probs, x))
        return hit[2]

    def teardown(self, stage: str) -> None:
        self.__dict__.pop("_eval_ref_cache", None)  # holds the split tensors: live for one fit/validate/test only

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        sanity = self.trainer.sanity_checking
        with_ref = self._reference is not None
        for view in VIEWS:
            m = self.metrics[f"{stage}_{view}"]
            if not sanity:
                self.log_dict({f"{stage}/{k}_{view}": v for k, v in m.compute(with_ref).items()})
            if with_ref and stage not in self._reference_logged:
                rm = self.reference_metrics[f"{stage}_{view}"]
                if not sanity:
                    self.log_dict({f"{stage}/reference/{k}_{view}": v for k, v in rm.compute().items()})
                rm.reset()
        if self.log_figures and not sanity:
            self._log_figures(stage)
        if with_ref and not sanity:
            self._reference_logged.add(stage)
        for view in VIEWS:
            self.metrics[f"{stage}_{view}"].reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _log_figures(self, stage: str) -> None:
        from prefalign.viz.figures import calibration_figure, confusion_matrix_figure, pairs_grid_figure
        from prefalign.viz.images import log_figure

        step = self.global_step
        for view in VIEWS:
            m = self.metrics[f"{stage}_{view}"]
            matrix = m.confusion.compute()  # computed on every rank (a collective); only rank zero plots
            confidence, correct = m.calibration_data()
            if self.trainer.world_size > 1:  # every rank's samples (uneven eval shards), not just rank zero's
                from torchmetrics.utilities.distributed import gather_all_tensors

                confidence = torch.cat(gather_all_tensors(confidence.float().to(self.device)))
                correct = torch.cat(gather_all_tensors(correct.to(self.device, torch.uint8))).bool()
            if self.trainer.is_global_zero:
                log_figure(self.trainer, f"{stage}/confusion_{view}", confusion_matrix_figure(matrix.cpu(), title=f"{stage} confusion ({view})"), step)
                log_figure(self.trainer, f"{stage}/calibration_{view}", calibration_figure(confidence.cpu(), correct.cpu(), title=f"{stage} calibration ({view})"), step)
        pairs = getattr(getattr(self.trainer, "datamodule", None), "pairs", None)
        if pairs and "pairs" not in self._figures_done and self.trainer.is_global_zero:
            k = min(32, len(pairs["x"]))
            log_figure(self.trainer, "data/mined_pairs", pairs_grid_figure(pairs["x"][:k].cpu(), pairs["chosen"][:k].cpu(), pairs["rejected"][:k].cpu()), step)
            self._figures_done.add("pairs")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        out = {"y": batch["y"]}
        for view in VIEWS:
            logps = chunked_forward(self.log_probs, batch[f"x_{view}"])
            out[f"pred_{view}"] = logps.argmax(1)
            out[f"confidence_{view}"] = logps.max(1).values.exp()
        return out

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The global RNG streams (PPO's label sampling, dropout), so a run resumed from a mid-epoch checkpoint draws
        # the same numbers as an uninterrupted one. Rank 0's state is written; every rank starts from the same seed
        # and draws the same amounts (training shards are padded to equal length), so the ranks' streams agree.
        rng = {"cpu": torch.get_rng_state()}
        device = self.trainer.strategy.root_device
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        checkpoint["prefalign_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("prefalign_rng")
        if not rng or self.trainer.state.fn != "fit":
            return
        torch.set_rng_state(rng["cpu"])
        device = self.trainer.strategy.root_device
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self) -> None:
        stats = getattr(getattr(self.trainer, "datamodule", None), "mining_stats", None)
        if stats:
            for logger in self.loggers:
                logger.log_metrics(stats, step=0)

    def on_fit_end(self) -> None:
        from prefalign.loggers import run_dir as _run_dir

        run_dir = _run_dir(self.trainer)  # a broadcast under DDP: every rank asks, before the rank-zero check
        if not self.trainer.is_global_zero:
            return
        meta = {"reference_ckpt": self.reference_ckpt or "", "objective": type(self.objective).__name__, "global_step": self.global_step}
        paths = [run_dir / "policy.pt"] + ([Path(self.export_path)] if self.export_path else [])
        for path in paths:
            save_weights(self.policy, path, meta)
        rank_zero_info("Saved policy weights to " + ", ".join(str(p) for p in paths))
