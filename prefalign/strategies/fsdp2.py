"""FSDP2Strategy: Lightning's ModelParallelStrategy as plain FSDP2 (``torch.distributed.fsdp.fully_shard``) over every
process, with the sharding itself done here, so a recipe needs only a config overlay (``configs/trainer/fsdp.yaml``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from lightning.fabric.utilities.distributed import _distributed_is_initialized
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.constants import default_pg_timeout

from prefalign.strategies.sharding import enable_activation_checkpointing, full_state_dict, fully_shard_module


class FSDP2Strategy(ModelParallelStrategy):
    """Fully sharded data parallel (FSDP2) over all processes of all nodes, for models that do not fit one device.

    Each decoder layer is a shard unit (its class found in the Hugging Face model's ``_no_split_modules``, or named in
    ``layer_classes``), the rest (embeddings, final norm, LM head) belongs to the root unit. The policy and the frozen
    reference are sharded the same way; the reference has no gradients and is never in the optimizer. The
    :class:`~prefalign.core.AlignmentModule` calls :meth:`shard` from ``configure_model``. At the end of a run the
    policy's full state dict is gathered on rank 0 (:meth:`full_state_dict`) and written with ``save_pretrained``.

    Args:
        layer_classes: class names of the shard units (default: the model's ``_no_split_modules``).
        activation_checkpointing: recompute each decoder layer's activations in the backward pass (the policy only).
        param_dtype: compute dtype of the gathered parameters, e.g. ``bfloat16`` (FSDP2's ``MixedPrecisionPolicy``);
            the sharded master weights and the optimizer state stay in their own dtype (fp32). None: no casting.
        reduce_dtype: dtype of the gradient reduce-scatter (``float32`` keeps bf16 gradients' sum exact-ish).
        reshard_after_forward: free the gathered parameters after each forward (ZeRO-3; False: ZeRO-2, more memory,
            one all-gather less per layer in the backward).
        save_distributed_checkpoint: Lightning checkpoints as one shard file per rank (True, scales) or one file
            gathered on rank 0 (False).
    """

    def __init__(
        self,
        layer_classes: list[str] | None = None,
        activation_checkpointing: bool = False,
        param_dtype: str | None = None,
        reduce_dtype: str | None = None,
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value is not None and not isinstance(getattr(torch, value, None), torch.dtype):
                raise ValueError(f"{name} must name a torch dtype (e.g. bfloat16, float32), got {value!r}")
        self.layer_classes = layer_classes
        self.activation_checkpointing = activation_checkpointing
        self.param_dtype, self.reduce_dtype = param_dtype, reduce_dtype
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        # One data-parallel dimension over every process (ModelParallelStrategy's "auto" would be the node count).
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def mixed_precision(self) -> Any:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        dtype = {
            k: getattr(torch, v)
            for k, v in (("param_dtype", self.param_dtype), ("reduce_dtype", self.reduce_dtype))
            if v
        }
        return MixedPrecisionPolicy(**dtype)

    def shard(self, module: nn.Module, trainable: bool = True) -> None:
        """Shard ``module`` (a policy, or with ``trainable=False`` a frozen reference) over the data-parallel mesh."""
        if trainable and self.activation_checkpointing:
            enable_activation_checkpointing(module)
        fully_shard_module(
            module,
            self.device_mesh["data_parallel"],
            self.layer_classes,
            self.mixed_precision(),
            self.reshard_after_forward,
        )

    def full_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """``module``'s unsharded state dict on rank 0's CPU (empty on the other ranks). Collective."""
        if not _distributed_is_initialized():
            return module.state_dict()
        return full_state_dict(module)
