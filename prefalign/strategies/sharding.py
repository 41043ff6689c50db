"""FSDP2 building blocks: which modules are the shard units of a model, sharding a policy or a frozen reference with
``torch.distributed.fsdp.fully_shard``, and gathering a sharded module's full state dict on rank 0."""

from __future__ import annotations

from typing import Any

from torch import nn


def shards_parameters(strategy: Any) -> bool:
    """Whether ``strategy`` shards parameters across processes (Lightning's FSDP, FSDP2 through ModelParallelStrategy):
    then a forward is collective, and every rank must run the same number of forwards."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def layer_class_names(module: nn.Module) -> set[str]:
    """The decoder-layer classes of every Hugging Face model inside ``module``: transformers lists them in
    ``_no_split_modules`` (the blocks that must stay whole on one device), which is the natural FSDP unit."""
    names: set[str] = set()
    for m in module.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    return names


def enable_activation_checkpointing(module: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant, which composes with FSDP2),
    through the Hugging Face model's own switch (no wrapper module: parameter names, and so the saved model, stay)."""
    for m in module.modules():
        switch = getattr(m, "activation_checkpointing_enable", None) or getattr(
            m, "gradient_checkpointing_enable", None
        )
        if switch is not None and hasattr(m, "config"):
            if getattr(m, "activation_checkpointing_enable", None) is not None:
                switch(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                switch(gradient_checkpointing_kwargs={"use_reentrant": False})
            return
    raise ValueError(
        f"activation_checkpointing needs a Hugging Face model (with activation_checkpointing_enable); "
        f"{type(module).__name__} has none."
    )


def fully_shard_module(
    module: nn.Module,
    mesh: Any,
    layer_classes: list[str] | None = None,
    mp_policy: Any = None,
    reshard_after_forward: bool = True,
    forward_methods: tuple[str, ...] = ("completion_logps",),
) -> None:
    """``fully_shard`` every decoder layer of ``module``, then ``module`` itself (the root: embeddings, final norm,
    LM head). Methods other than ``forward`` that run the model (``completion_logps``: the LM head on completion
    positions only) are registered so FSDP gathers the root's parameters around them too."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    if isinstance(module, FSDPModule):
        return  # configure_model runs again for validate/test after fit
    names = set(layer_classes) if layer_classes else layer_class_names(module)
    units = [m for m in module.modules() if type(m).__name__ in names]
    if not units:
        raise ValueError(
            f"no module of {type(module).__name__} is a shard unit ({', '.join(sorted(names)) or 'none found'}): "
            "set trainer.strategy.init_args.layer_classes to the model's decoder-layer class name."
        )
    kwargs = {
        "mesh": mesh,
        "reshard_after_forward": reshard_after_forward,
        "mp_policy": mp_policy or MixedPrecisionPolicy(),
    }
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(module, **kwargs)
    for name in forward_methods:
        if hasattr(module, name):
            register_fsdp_forward_method(module, name)


def full_state_dict(module: nn.Module) -> dict[str, Any]:
    """The full (unsharded) state dict of ``module``, on the CPU of rank 0 (empty elsewhere). Collective: call it on
    every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
