"""AlignmentModule: a trainable policy, a frozen reference, a pluggable objective, and a model family."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from prefalign.checkpoint import CheckpointError, save_weights
from prefalign.core.rl import ppo_step
from prefalign.data.preference_data import PreferenceData
from prefalign.families.base import ModelFamily, check_capabilities
from prefalign.models.loading import load_into, load_model
from prefalign.models.lora import AdaptersOffReference, LoRA, check_adapters_reference
from prefalign.models.registry import register_architecture
from prefalign.objectives import SFT, Objective, PPOLite


class AlignmentModule(L.LightningModule):
    """A trainable policy, an optional frozen reference, an objective and a model family, all chosen in the config.

    The module is the same for every kind of model: the *family* (:mod:`prefalign.families`) turns batches
    into the log-probabilities the objective consumes, samples responses for RL, and owns evaluation metrics
    and figures. The default family is the classifier, so the MNIST configs need not name it.

    With ``reference_ckpt`` set, the reference is loaded from that weights file, frozen
    (``requires_grad_(False)``, kept in eval mode, run under ``no_grad``) and kept *outside* the module
    tree, so it is never DDP-wrapped, never saved in Lightning checkpoints and never touched by
    ``train()``; the policy starts as an exact copy of it. Without a reference the policy trains from
    its random initialisation (a reference recipe such as ``configs/sft.yaml``).

    A :class:`~prefalign.models.LoRA` policy starts from ``reference_ckpt`` too: the file (of the LoRA's base
    architecture) goes into its frozen base layers and the adapters start at zero, and only the adapters train.
    Its reference is then either a frozen copy loaded from the file (the default) or, with
    ``reference_from_adapters``, the policy itself with its adapters off (no second copy of the weights).

    Args:
        backbone: the policy architecture (default: the seed-000 CNN).
        objective: the loss: ``SFT`` (default), any DPO-family objective, or ``PPOLite``.
        family: the model family (default: :class:`~prefalign.families.classifier.ClassifierFamily`). An
            objective whose ``requires`` the family cannot meet is refused here, with the reason.
        reference_ckpt: weights file of the reference (and the policy's starting point). A backbone with a
            ``load_reference()`` method (:class:`~prefalign.models.HFCausalLM`) provides its own reference when
            this is unset: a frozen copy of the pretrained model, or the policy with its peft adapters off.
        reference_from_adapters: with a LoRA policy, use the policy with its adapters disabled as the reference
            (Diffusion-DPO's way) instead of loading a frozen copy of ``reference_ckpt``; both compute the same
            numbers, this one without a second copy of the weights. Needs a LoRA backbone and ``reference_ckpt``.
        export_path: also write the final policy weights here (a reference recipe writes the reference here).
        optimizer: optimizer factory (default Adam, lr 1e-3 — the notebook's).
        lr_scheduler: optional scheduler factory (stepped every epoch).
        recompute_reference: run the reference on every training batch instead of reading the cached
            log-probs (slower; the DPO-on-noisy-MNIST notebook's way; results are identical up to fp noise).
        nan_policy: on a non-finite loss, ``raise`` (checked at every logging step and at epoch end,
            without a per-step host sync) or ``skip`` the step and count it (one sync per step).
        compile: ``torch.compile`` the policy's forward.
        log_figures: log the family's figures (confusion matrices, calibration curves, samples) after evaluation.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        objective: Objective | PPOLite | None = None,
        family: ModelFamily | None = None,
        reference_ckpt: str | None = None,
        reference_from_adapters: bool = False,
        export_path: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        recompute_reference: bool = False,
        nan_policy: Literal["raise", "skip"] = "raise",
        compile: bool = False,
        log_figures: bool = True,
    ) -> None:
        super().__init__()
        if backbone is None:
            from prefalign.models import SeedCNN

            backbone = SeedCNN()
        if family is None:
            from prefalign.families.classifier import ClassifierFamily

            family = ClassifierFamily()
        self.policy = backbone
        # The config named this class (or the caller built it): weights files of it may be rebuilt (the reference).
        register_architecture(type(backbone.model if isinstance(backbone, LoRA) else backbone))
        self.objective = objective if objective is not None else SFT()
        self.family = family
        check_capabilities(self.objective, self.family)
        # A backbone that brings its own reference (a pretrained HF model: a frozen copy of itself, or itself with its
        # peft adapters off) needs no weights file: see ``load_reference`` in :mod:`prefalign.models.hf`.
        self.own_reference = reference_ckpt is None and hasattr(backbone, "load_reference")
        if (
            self.objective.needs_reference
            and reference_ckpt is None
            and not self.own_reference
            and getattr(self.objective, "kl_coef", 1) != 0
        ):
            raise ValueError(
                f"objective {type(self.objective).__name__} needs a frozen reference: set model.reference_ckpt to a weights file "
                "(train one with the recipe's reference config, e.g. `python -m prefalign fit --config configs/sft.yaml`)."
            )
        if reference_from_adapters:
            check_adapters_reference(self.policy)
            if reference_ckpt is None:
                raise ValueError(
                    "model.reference_from_adapters=true needs model.reference_ckpt: the base weights the adapters start from."
                )
        if nan_policy not in ("raise", "skip"):
            raise ValueError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
        self.reference_ckpt = reference_ckpt
        self.reference_from_adapters = reference_from_adapters
        self.export_path = export_path
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.recompute_reference = recompute_reference
        self.nan_policy = nan_policy
        self.compile = compile
        self.log_figures = log_figures
        self.is_ppo = isinstance(self.objective, PPOLite)
        self.automatic_optimization = not self.is_ppo
        # Plain attributes (not submodules): the frozen reference and the possibly compiled forward.
        object.__setattr__(self, "_reference", None)
        object.__setattr__(self, "_forward", self.policy)
        self._policy_initialised = False
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)
        self.skipped_steps = 0

    @property
    def main_metric(self) -> str | None:
        """The validation metric to watch (progress lines, checkpoint monitors): the family's."""
        return self.family.main_metric

    # ------------------------------------------------------------------ what families use
    @property
    def policy_forward(self) -> Any:
        """The policy's forward as training runs it (``torch.compile``-d with ``compile``): families evaluate and
        sample the policy through it."""
        return self._forward

    @property
    def datamodule(self) -> Any:
        """The trainer's data module, or None (no trainer attached yet, or a fit without a data module). Unlike
        ``self.trainer``, which raises before a trainer is attached."""
        return getattr(self._trainer, "datamodule", None)

    # ------------------------------------------------------------------ reference
    @property
    def reference(self) -> nn.Module | None:
        ref = self._reference
        if ref is not None and next(ref.parameters()).device != self.device:
            ref.to(self.device)
        return ref

    def setup(self, stage: str) -> None:
        # PPO-lite with kl_coef 0 (TRL GRPO's default beta) never reads a reference: none is loaded (a full model copy).
        if (
            self.own_reference
            and self._reference is None
            and self.objective.needs_reference
            and getattr(self.objective, "kl_coef", 1) != 0
        ):
            object.__setattr__(self, "_reference", self.policy.load_reference())
        if self.reference_ckpt is not None and self._reference is None:
            if not Path(self.reference_ckpt).is_file():
                raise CheckpointError(
                    f"reference checkpoint not found: {self.reference_ckpt}. Train it with the recipe's reference config "
                    "(e.g. `python -m prefalign fit --config configs/sft.yaml`), or run an alignment config, which trains it first."
                )
            if self.reference_from_adapters:
                reference = AdaptersOffReference(self.policy)  # a view of the policy: nothing more to load
            else:
                reference = load_model(self.reference_ckpt)
                reference.eval().requires_grad_(False)
            object.__setattr__(self, "_reference", reference)
            if not self._policy_initialised:
                # The policy starts as an exact copy (a checkpoint given with --ckpt_path overwrites it afterwards);
                # a LoRA policy's base layers get the file and its adapters start at zero.
                if isinstance(self.policy, LoRA):
                    self.policy.load_base_weights(self.reference_ckpt)
                else:
                    load_into(self.policy, self.reference_ckpt)
        self._policy_initialised = True
        datamodule = self.datamodule
        if (
            datamodule is not None
            and stage == "fit"
            and self.objective.needs_pairs
            and not isinstance(datamodule, PreferenceData)
        ):
            raise ValueError(
                f"objective {type(self.objective).__name__} trains on preference pairs, but {type(datamodule).__name__} has none: "
                "use a preference data module (e.g. data.class_path: prefalign.data.PreferenceDataModule)."
            )
        self.family.setup(self, stage)
        if self.is_ppo:
            self.objective.reward.setup(self, datamodule)
        if self.compile and self._forward is self.policy:
            object.__setattr__(self, "_forward", torch.compile(self.policy))

    def configure_model(self) -> None:
        # A strategy that shards parameters (FSDP2Strategy) shards the policy, and a reference that owns its weights
        # the same way (frozen: no gradient, never in the optimizer). A peft reference is a view of the policy's
        # own, already sharded, base weights. Other strategies leave the models alone.
        shard = getattr(self._trainer.strategy, "shard", None) if self._trainer is not None else None
        if shard is None:
            return
        shard(self.policy)
        reference = self._reference
        if reference is not None:
            own = {id(p) for p in self.policy.parameters()}
            if not any(id(p) in own for p in reference.parameters()):
                shard(reference, trainable=False)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.is_ppo:
            return ppo_step(self, batch)
        reference = self.reference if self.objective.needs_reference else None
        # LD-DPO's ld_alpha re-weights the sequence log-probs themselves, so it goes to the family (capability token_lengths).
        extra = {"ld_alpha": self.objective.ld_alpha} if getattr(self.objective, "ld_alpha", None) is not None else {}
        pair = self.family.pair_logps(
            self._forward,
            reference,
            batch,
            self.recompute_reference,
            self.objective.length_normalized,
            wpo_weights="wpo_weights" in self.objective.requires,
            **extra,
        )
        out = self.objective(pair)
        loss = self.guard(out.loss)
        if loss is None:
            return None
        show, write = self.train_logging()
        if show or write:
            self.log("train/loss", loss, prog_bar=show)
        if write:
            self.log_dict({f"train/{k}": v for k, v in out.metrics.items()})
            if pair.kl is not None:
                self.log("train/kl_ref", pair.kl.mean())
        return loss

    def train_logging(self) -> tuple[bool, bool]:
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

    def on_train_epoch_end(self) -> None:
        if self.is_ppo:
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()

    def guard(self, loss: torch.Tensor) -> torch.Tensor | None:
        """The loss, or None for a non-finite one under ``nan_policy=skip``; under ``raise`` it is flagged without a sync."""
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
        # Frozen weights (a LoRA policy's base) stay out of the optimizer: no state kept for them, no weight decay.
        optimizer = self.optimizer_factory([p for p in self.policy.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    # ------------------------------------------------------------------ evaluation (the family's)
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.family.eval_step(self, batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.family.eval_step(self, batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.family.eval_epoch_end(self, "val")

    def on_test_epoch_end(self) -> None:
        self.family.eval_epoch_end(self, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.family.predict_step(self, batch)

    def teardown(self, stage: str) -> None:
        self.family.teardown(stage)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The global RNG streams (PPO's sampling, dropout, a denoiser's noise), so a run resumed from a mid-epoch
        # checkpoint draws the same numbers as an uninterrupted one. Rank 0's state is written; every rank starts
        # from the same seed and draws the same amounts (training shards are padded to equal length).
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
        self.family.on_fit_start(self)
        datamodule = self.datamodule
        if isinstance(datamodule, PreferenceData) and datamodule.mining_stats:
            for logger in self.loggers:
                logger.log_metrics(datamodule.mining_stats, step=0)

    def on_fit_end(self) -> None:
        from prefalign.loggers import run_dir as _run_dir

        run_dir = _run_dir(self.trainer)  # a broadcast under DDP: every rank asks, before the rank-zero check
        # A sharded policy (FSDP2Strategy) is gathered whole on rank 0 first: collective, so every rank asks.
        gather = getattr(self.trainer.strategy, "full_state_dict", None)
        full_state = gather(getattr(self.policy, "model", self.policy)) if gather is not None else None
        if not self.trainer.is_global_zero:
            return
        meta = {
            "reference_ckpt": self.reference_ckpt or "",
            "objective": type(self.objective).__name__,
            "global_step": self.global_step,
            **self.family.weights_meta(),
        }
        if hasattr(
            self.policy, "save_pretrained"
        ):  # a Hugging Face model: a directory transformers/peft load unchanged
            paths = [run_dir / "policy"] + ([Path(self.export_path)] if self.export_path else [])
            for path in paths:
                self.policy.save_pretrained(path, state_dict=full_state)
            rank_zero_info("Saved the policy (save_pretrained) to " + ", ".join(str(p) for p in paths))
            return
        paths = [run_dir / "policy.pt"] + ([Path(self.export_path)] if self.export_path else [])
        for path in paths:
            save_weights(self.policy, path, meta)
        rank_zero_info("Saved policy weights to " + ", ".join(str(p) for p in paths))
