"""The classifier family's evaluation: per-view metrics, the reference's metrics once, figures, predictions."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torch.nn import functional as F

from prefalign.data.batches import chunked_forward
from prefalign.families.base import ModelFamily
from prefalign.families.classifier.metrics import ViewMetrics, classifier_metrics

VIEWS = ("clean", "noisy")
STAGES = ("val", "test")

# Under DDP Lightning suggests sync_dist=True for every epoch-level value; ours are torchmetrics results, already
# reduced over all ranks by .compute(), so the suggestion (one warning per key) does not apply.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\('(val|test)/", category=PossibleUserWarning
)


class ClassifierEvaluation(ModelFamily):
    """Validation/test on the clean and the noisy view of each split: the policy every epoch, the reference once."""

    summary_keys = ("acc_clean", "acc_noisy", "f1_noisy", "ece_noisy", "kl_ref_noisy", "changed_vs_ref_noisy")
    main_metric = "val/acc_noisy"

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.metrics: nn.ModuleDict | None = None
        self.reference_metrics: nn.ModuleDict | None = None
        self._reference_logged: set[str] = set()
        self._figures_done: set[str] = set()

    def build_metrics(self, num_classes: int) -> None:
        if self.metrics is not None and self.num_classes == num_classes:
            return
        self.num_classes = num_classes
        self.metrics = nn.ModuleDict({f"{s}_{v}": ViewMetrics(num_classes) for s in STAGES for v in VIEWS})
        self.reference_metrics = nn.ModuleDict(
            {f"{s}_{v}": classifier_metrics(num_classes) for s in STAGES for v in VIEWS}
        )

    def _log_probs(self, model: Any, x: Tensor) -> Tensor:
        return chunked_forward(lambda part: F.log_softmax(model(part).float(), dim=1), x)  # cache-sized chunks on CPU

    def eval_step(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        y = batch["y"]
        n = len(y)
        x = torch.cat([batch["x_clean"], batch["x_noisy"]])
        logps = self._log_probs(module.policy_forward, x)
        ref = self._reference_log_probs(module, batch, x) if module.reference is not None else None
        for i, view in enumerate(VIEWS):
            part = slice(i * n, (i + 1) * n)
            self.metrics[f"{stage}_{view}"].update(logps[part], y, ref[part] if ref is not None else None)
            if ref is not None and stage not in self._reference_logged:
                self.reference_metrics[f"{stage}_{view}"].update(ref[part].exp(), y)

    @torch.no_grad()
    def _reference_log_probs(self, module: Any, batch: dict[str, Tensor], x: Tensor) -> Tensor:
        """The frozen reference's log-probs on an evaluation batch, computed once per batch of fixed data.

        Evaluation batches are plain slices (views) of the datamodule's split tensors, so a batch is identified by
        (its base tensors, offset, length) and the reference's answer for it never changes: later validation
        epochs reuse it instead of running the reference again. The cache holds the base tensors, so their ids
        cannot be reused by other data; batches that are copies (shuffled or DDP-sharded) are not cached."""
        views = [batch["x_clean"], batch["x_noisy"]]
        bases = [v._base for v in views]
        if any(b is None for b in bases):
            return self._log_probs(module.reference, x)
        key = (
            tuple(id(b) for b in bases),
            tuple(v.storage_offset() for v in views),
            len(x),
            torch.is_autocast_enabled(x.device.type),
        )
        cache = self.__dict__.setdefault("_eval_ref_cache", {})
        hit = cache.get(key)
        if hit is None or hit[0] is not bases[0] or hit[1] is not bases[1]:
            hit = cache[key] = (bases[0], bases[1], self._log_probs(module.reference, x))
        return hit[2]

    def teardown(self, stage: str) -> None:
        self.__dict__.pop("_eval_ref_cache", None)  # holds the split tensors: live for one fit/validate/test only

    def eval_epoch_end(self, module: Any, stage: str) -> None:
        sanity = module.trainer.sanity_checking
        with_ref = module.reference is not None
        for view in VIEWS:
            m = self.metrics[f"{stage}_{view}"]
            if not sanity:
                module.log_dict({f"{stage}/{k}_{view}": v for k, v in m.compute(with_ref).items()})
            if with_ref and stage not in self._reference_logged:
                rm = self.reference_metrics[f"{stage}_{view}"]
                if not sanity:
                    module.log_dict({f"{stage}/reference/{k}_{view}": v for k, v in rm.compute().items()})
                rm.reset()
        if module.log_figures and not sanity:
            self._log_figures(module, stage)
        if with_ref and not sanity:
            self._reference_logged.add(stage)
        for view in VIEWS:
            self.metrics[f"{stage}_{view}"].reset()

    def _log_figures(self, module: Any, stage: str) -> None:
        from prefalign.viz.figures import calibration_figure, confusion_matrix_figure, pairs_grid_figure
        from prefalign.viz.images import log_figure
        from prefalign.viz.tables import log_table

        trainer = module.trainer
        step = module.global_step
        per_class = {}
        for view in VIEWS:
            m = self.metrics[f"{stage}_{view}"]
            matrix = m.confusion.compute()  # computed on every rank (a collective); only rank zero plots
            per_class[view] = (matrix.diagonal() / matrix.sum(1).clamp(min=1)).cpu()
            confidence, correct = m.calibration_data()
            if trainer.world_size > 1:  # every rank's samples (uneven eval shards), not just rank zero's
                from torchmetrics.utilities.distributed import gather_all_tensors

                confidence = torch.cat(gather_all_tensors(confidence.float().to(module.device)))
                correct = torch.cat(gather_all_tensors(correct.to(module.device, torch.uint8))).bool()
            if trainer.is_global_zero:
                log_figure(
                    trainer,
                    f"{stage}/confusion_{view}",
                    confusion_matrix_figure(matrix.cpu(), title=f"{stage} confusion ({view})"),
                    step,
                )
                log_figure(
                    trainer,
                    f"{stage}/calibration_{view}",
                    calibration_figure(confidence.cpu(), correct.cpu(), title=f"{stage} calibration ({view})"),
                    step,
                )
        if trainer.is_global_zero:
            rows = [
                [c, round(float(per_class["clean"][c]), 4), round(float(per_class["noisy"][c]), 4)]
                for c in range(len(per_class["clean"]))
            ]
            log_table(trainer, f"{stage}/per_class_accuracy", ["class", "acc_clean", "acc_noisy"], rows, step)
        pairs = getattr(getattr(trainer, "datamodule", None), "pairs", None)
        if pairs and "pairs" not in self._figures_done and trainer.is_global_zero:
            k = min(32, len(pairs["x"]))
            log_figure(
                trainer,
                "data/mined_pairs",
                pairs_grid_figure(pairs["x"][:k].cpu(), pairs["chosen"][:k].cpu(), pairs["rejected"][:k].cpu()),
                step,
            )
            self._figures_done.add("pairs")

    def predict_step(self, module: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {"y": batch["y"]}
        for view in VIEWS:
            logps = self._log_probs(module.policy_forward, batch[f"x_{view}"])
            out[f"pred_{view}"] = logps.argmax(1)
            out[f"confidence_{view}"] = logps.max(1).values.exp()
        return out

    def predict_summary(self, merged: dict[str, Tensor]) -> str:
        acc = {v: (merged[f"pred_{v}"] == merged["y"]).float().mean().item() for v in VIEWS}
        return f"{len(merged['y'])} predictions (accuracy clean {acc['clean']:.4f}, noisy {acc['noisy']:.4f})"
