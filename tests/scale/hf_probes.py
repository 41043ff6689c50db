"""Test-only callback loaded *by class path* inside the DDP/FSDP CLI processes of ``tests/scale/test_hf_*.py``.

:class:`HFProbe` records, on every rank: the chosen sequences and the loss of each training step, which rows the rank
ran the reference on while the reference log-probs were cached, the cached values, every ``save_pretrained`` call,
and how the policy and the reference are wrapped (DDP) or sharded (FSDP2) and whether the reference stayed frozen.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

PROBE_DIR = Path("probe")


class HFProbe(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.reference_rows = 0
        self.saves: list[str] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        # Called before the module's on_fit_start, where the family caches the reference's log-probs.
        family, policy = pl_module.family, pl_module.policy
        reference_sums, save_pretrained = family.reference_sums, policy.save_pretrained

        def counting_sums(reference, batch):
            if not self.steps and not trainer.validating:  # caching, not evaluating (validation recomputes them)
                self.reference_rows += len(batch["input_ids"]) // 2
            return reference_sums(reference, batch)

        def recording_save(folder, *args, **kwargs):
            self.saves.append(str(folder))
            return save_pretrained(folder, *args, **kwargs)

        family.reference_sums, policy.save_pretrained = counting_sums, recording_save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        n = len(batch["input_ids"]) // 2
        ids, mask = batch["input_ids"][:n], batch["attention_mask"][:n].bool()
        self.steps.append({"chosen": [row[m].tolist() for row, m in zip(ids, mask)]})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[-1]["loss"] = float(outputs["loss"])

    def on_train_end(self, trainer, pl_module) -> None:
        from torch.distributed.fsdp import FSDPModule
        from torch.nn.parallel import DistributedDataParallel
        from transformers import AutoModelForCausalLM

        reference = pl_module._reference
        wrapped = trainer.strategy.model
        wrapped_ids = {id(p) for p in wrapped.parameters()}
        original = AutoModelForCausalLM.from_pretrained(str(pl_module.policy.folder)).state_dict()
        full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in reference.model.state_dict().items()}
        train = trainer.datamodule.splits["train"]
        optimizer_ids = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        self.facts = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "policy_is_ddp_wrapped": isinstance(wrapped, DistributedDataParallel),
            "policy_is_fsdp": isinstance(pl_module.policy, FSDPModule),
            "fsdp_units": sorted({type(m).__name__ for m in pl_module.policy.modules() if isinstance(m, FSDPModule)}),
            "reference_is_fsdp": isinstance(reference, FSDPModule),
            "reference_params_in_wrapper": sum(id(p) in wrapped_ids for p in reference.parameters()),
            "reference_params_in_optimizer": sum(id(p) in optimizer_ids for p in reference.parameters()),
            "reference_requires_grad": sum(p.requires_grad for p in reference.parameters()),
            "reference_has_grad": sum(p.grad is not None for p in reference.parameters()),
            "reference_equal_to_file": all(torch.equal(full[k].cpu(), v) for k, v in original.items()),
            "reference_rows": self.reference_rows,
            "ref_head": train["ref_head"].tolist(),
            "ref_tail": train["ref_tail"].tolist(),
        }

    def teardown(self, trainer, pl_module, stage) -> None:
        if stage != "fit":
            return
        PROBE_DIR.mkdir(exist_ok=True)
        facts = {**getattr(self, "facts", {}), "steps": self.steps, "saves": self.saves}
        (PROBE_DIR / f"rank{trainer.global_rank}.json").write_text(json.dumps(facts))
