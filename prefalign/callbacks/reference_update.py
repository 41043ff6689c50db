"""TR-DPO: move the reference towards the policy during training (soft mix or hard copy)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from prefalign.models.lora import LoRA
from prefalign.validation import check_in_range


class ReferenceUpdate(Callback):
    r"""Trust-region DPO (Gorbatovski et al., 2024, "Learn Your Reference Model for Real Good Alignment",
    arXiv:2404.09656); TRL's ``sync_ref_model`` with ``ref_model_mixup_alpha`` / ``ref_model_sync_steps``.

    Every ``every_n_steps`` optimiser steps the frozen reference is updated from the policy,

    .. math:: \theta_{ref} \leftarrow \alpha\,\theta + (1-\alpha)\,\theta_{ref}

    TR-DPO^α (soft) is ``alpha < 1, every_n_steps = 1`` (the paper's α ≈ 0.6 with τ = 1 ... 8); TR-DPO^τ (hard) is
    ``alpha = 1, every_n_steps = τ`` (a copy every τ steps, the paper's τ ≈ 256-512).

    The reference is a plain attribute of the module, never wrapped in DDP: every rank applies the same update
    to its own copy from its identical (already all-reduced) policy weights, so the copies stay equal with no
    communication. Reference log-probs cached at mining time would go stale, so the module's
    ``recompute_reference`` is switched on (the reference then runs on every training batch). During training the
    logged KL is to the moving reference (the trust region); when training ends the original reference is loaded
    back, so the final test compares the policy with the reference it started from, like every other run.

    Args:
        alpha: weight of the policy in the mix, in (0, 1].
        every_n_steps: optimiser steps between updates.
    """

    def __init__(self, alpha: float = 0.6, every_n_steps: int = 1) -> None:
        check_in_range("alpha", alpha, 0.0, 1.0, low_open=True)
        check_in_range("every_n_steps", every_n_steps, 1)
        self.alpha = alpha
        self.every_n_steps = every_n_steps
        self.updates = 0
        self._last_step = -1

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if getattr(pl_module, "_reference", None) is None:
            raise ValueError("ReferenceUpdate (TR-DPO) needs a frozen reference: set model.reference_ckpt.")
        if getattr(pl_module, "reference_from_adapters", False):
            raise ValueError(
                "ReferenceUpdate (TR-DPO) moves the reference towards the policy, but with model.reference_from_adapters=true "
                "the reference is the policy's frozen base (adapters off), which cannot move. Set model.reference_from_adapters=false "
                "(the LoRA policy then gets a frozen copy of model.reference_ckpt that TR-DPO updates), or drop the callback."
            )
        self._module = pl_module
        restored = getattr(self, "_restored_reference", None)
        if restored is not None:
            pl_module.reference.load_state_dict(restored)
            rank_zero_info(f"ReferenceUpdate: resumed with the reference as it was after {self.updates} updates.")
            self._restored_reference = None
        if not pl_module.recompute_reference:
            rank_zero_info(
                "ReferenceUpdate: the reference changes during training, so its log-probs are recomputed every batch "
                "(model.recompute_reference turned on)."
            )
            pl_module.recompute_reference = True

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # The test after fit (and its KL / "changed vs reference" columns) measures the policy against the original
        # reference, as for every other objective; the moved one stays in the last checkpoint's callback state.
        from prefalign.models.loading import load_into

        load_into(pl_module.reference, pl_module.reference_ckpt)
        rank_zero_info(f"ReferenceUpdate: {self.updates} updates; the original reference is back for testing.")

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step  # optimiser steps, so gradient accumulation is respected
        if step == self._last_step or step == 0 or step % self.every_n_steps:
            return
        self._last_step = step
        reference = pl_module.reference
        policy = pl_module.policy
        # A LoRA policy's reference has the base architecture: mix in the policy as one (W + scale * BA).
        source = policy.merged() if isinstance(policy, LoRA) else policy
        for ref, pol in zip(reference.parameters(), source.parameters()):
            ref.lerp_(pol.detach().to(ref.dtype), self.alpha)  # ref + alpha (pol - ref)
        for ref, pol in zip(reference.buffers(), source.buffers()):
            if ref.is_floating_point():
                ref.lerp_(pol.to(ref.dtype), self.alpha)
            else:
                ref.copy_(pol)
        self.updates += 1

    # The moved reference is part of the training state: it is saved with the callback's state (the module's
    # checkpoint holds only the policy) and restored on resume, instead of the original reference_ckpt.
    def state_dict(self) -> dict[str, Any]:
        state = {"updates": self.updates, "last_step": self._last_step}
        module = getattr(self, "_module", None)
        if module is not None and module.reference is not None:
            state["reference"] = {k: v.detach().clone() for k, v in module.reference.state_dict().items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = state_dict.get("updates", 0)
        self._last_step = state_dict.get("last_step", -1)
        self._restored_reference = state_dict.get("reference")
