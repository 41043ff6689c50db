"""When a fit validates: once after the last epoch (:class:`ValidateAtEnd`) or never (:class:`NoValidationInFit`)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class ValidateAtEnd(L.Callback):
    """Run the validation loop only after the last epoch of a ``max_epochs`` run.

    Lightning validates after every ``check_val_every_n_epoch`` epochs. A recipe whose numbers are read at the end
    (the DPO-on-noisy-MNIST notebook never validates) spends a validation pass per epoch on nobody's question: on the
    classifier pipeline 5 of its 7 validation passes, ~15 s of 170 s on a 2-core CPU. This callback sets the interval
    to ``max_epochs`` when the fit starts, so overriding ``--trainer.max_epochs`` keeps "validate at the end"; a run
    resumed from a checkpoint counts its epochs from the start as Lightning does. A run bounded by ``max_steps``
    only keeps Lightning's per-epoch validation (its last epoch is not known in advance), with a warning.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is None or trainer.max_epochs < 1 or trainer.max_steps not in (-1, None):
            rank_zero_warn("ValidateAtEnd: the run is bounded by max_steps, not max_epochs; validating every epoch.")
            return
        trainer.check_val_every_n_epoch = trainer.max_epochs


class NoValidationInFit(L.Callback):
    """Skip validation (and its sanity check) during ``fit`` only; ``validate`` with the same config still validates.

    For a recipe whose fit is followed by a test pass that reports what validation would (the seed DPO recipe:
    policy and reference on both views of the test set), validating after the last epoch as well cost ~3 s of a
    ~110 s pipeline, figures included. ``--trainer.limit_val_batches 0`` would do the same for the fit but would
    also make ``python -m prefalign validate --config <recipe>`` validate nothing.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._limit = trainer.limit_val_batches
        trainer.limit_val_batches = 0

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.limit_val_batches = self.__dict__.pop("_limit", trainer.limit_val_batches)
