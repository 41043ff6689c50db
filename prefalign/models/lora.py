"""LoRA adapters for any backbone built of ``nn.Linear`` / ``nn.Conv2d`` layers, and the "reference = adapters off" view.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) freezes a model's
weights and learns a low-rank update of each targeted layer: ``W x + (alpha / rank) * B (A x)``, with ``B`` zero at
initialisation so the adapted model starts as the base model. Diffusion-DPO (Wallace et al., 2023, arXiv:2311.12908;
diffusers' ``train_diffusion_dpo.py``) uses the same model with its adapters turned off as the frozen reference, so
the reference costs no second copy of the weights: :class:`AdaptersOffReference` is that view.

State-dict layout of ``LoRA(base)``: the adapted model sits under ``model.``; every targeted layer at path ``p`` is
replaced by a :class:`LoRALinear` / :class:`LoRAConv2d` that holds the original layer as ``.base``::

    model.<p>.base.weight, model.<p>.base.bias   the original layer (frozen)
    model.<p>.lora_A.weight                      A: in -> rank (Linear; for Conv2d a conv with the layer's kernel,
                                                 stride, padding and dilation)
    model.<p>.lora_B.weight                      B: rank -> out (Linear; for Conv2d a 1x1 conv), zero at initialisation
    model.<q>                                    every other parameter and buffer of the base, under its own name

:meth:`LoRA.base_state_dict` maps this back to the base architecture's keys (``<p>.weight``, ...).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from prefalign.checkpoint import CheckpointError, class_path_of, load_weights
from prefalign.models.fast_layers import FewOutputsLinear, InputConv2d
from prefalign.models.loading import instantiate

# Exact types, not isinstance: subclasses such as nn.MultiheadAttention's out_proj (NonDynamicallyQuantizableLinear)
# are read by their owner as raw weights, never called, so a wrapper in their place would break the owner.
# The fast_layers subclasses hold the same weights as their parents and are adapted as them.
TARGETS: dict[str, tuple[type[nn.Module], ...]] = {
    "Linear": (nn.Linear, FewOutputsLinear),
    "Conv2d": (nn.Conv2d, InputConv2d),
}


class LoRALayer(nn.Module, ABC):
    """``base(x) + scale * lora_B(lora_A(x))``; with ``enabled`` False the adapter branch is skipped entirely."""

    def __init__(self, base: nn.Module, lora_A: nn.Module, lora_B: nn.Module, scale: float) -> None:
        super().__init__()
        self.base = base
        self.lora_A = lora_A
        self.lora_B = lora_B
        self.scale = scale
        self.enabled = True
        self.reset_adapter()

    def reset_adapter(self) -> None:
        """The paper's initialisation: A Kaiming-uniform (nn.Linear's default), B zero, so BA = 0."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if not self.enabled:
            return out  # skipped, not multiplied by zero: exactly the base layer's output
        return out + self.scale * self.lora_B(self.lora_A(x))

    @abstractmethod
    def delta_weight(self) -> Tensor:
        """``scale * BA`` in the shape of ``base.weight``: what :meth:`LoRA.merged` adds to it."""

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.weight.shape[0]}, scale={self.scale:g}, enabled={self.enabled}"


class LoRALinear(LoRALayer):
    """A LoRA-adapted ``nn.Linear``: A is ``Linear(in, rank)``, B is ``Linear(rank, out)``, both without bias."""

    def __init__(self, base: nn.Linear, rank: int, scale: float) -> None:
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        super().__init__(
            base,
            nn.Linear(base.in_features, rank, bias=False, **kw),
            nn.Linear(rank, base.out_features, bias=False, **kw),
            scale,
        )

    def delta_weight(self) -> Tensor:
        return self.scale * (self.lora_B.weight @ self.lora_A.weight)


class LoRAConv2d(LoRALayer):
    """A LoRA-adapted ``nn.Conv2d`` (``groups=1``): A is a conv into ``rank`` channels with the layer's kernel size,
    stride, padding, dilation and padding mode (so its output has the layer's spatial shape), B a 1x1 conv."""

    def __init__(self, base: nn.Conv2d, rank: int, scale: float) -> None:
        if base.groups != 1:
            raise ValueError(f"LoRAConv2d adapts convolutions with groups=1 only, got groups={base.groups}.")
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        lora_A = nn.Conv2d(
            base.in_channels,
            rank,
            base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            bias=False,
            padding_mode=base.padding_mode,
            **kw,
        )
        lora_B = nn.Conv2d(rank, base.out_channels, 1, bias=False, **kw)
        super().__init__(base, lora_A, lora_B, scale)

    def delta_weight(self) -> Tensor:
        # B is a 1x1 conv after A, so B∘A is one conv whose kernel mixes A's rank kernels with B's weights.
        return self.scale * torch.einsum("or,rihw->oihw", self.lora_B.weight[:, :, 0, 0], self.lora_A.weight)


WRAPPERS: dict[type[nn.Module], type[LoRALayer]] = {
    nn.Linear: LoRALinear,
    FewOutputsLinear: LoRALinear,
    nn.Conv2d: LoRAConv2d,
    InputConv2d: LoRAConv2d,
}


def _children_everywhere(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, child) for every registration of every submodule, shared ones included (tied layers)."""
    for _, parent in list(model.named_modules(remove_duplicate=False)):
        for name, child in list(parent._modules.items()):
            if child is not None:
                yield parent, name, child


class LoRA(nn.Module):
    """A backbone with LoRA adapters on its ``nn.Linear`` / ``nn.Conv2d`` layers (Hu et al., 2021, arXiv:2106.09685).

    The base weights are frozen (``requires_grad_(False)``); only the adapters train. At initialisation (B = 0)
    the output is the base model's, bit for bit. ``forward(*args, **kwargs)`` is the base model's, so any
    backbone signature works (``classifier(x)``, ``denoiser(x, t, y)``). Attributes the wrapper lacks are read
    from the adapted model (a language model's ``block_size`` and ``vocab``, say), so a family can use a LoRA
    policy wherever it uses its base.

    In a config::

        backbone:
          class_path: prefalign.models.LoRA
          init_args:
            base: {class_path: prefalign.models.LeNet, init_args: {num_classes: 10}}
            rank: 4

    Layers are matched by exact type (subclasses are left alone: their owners may read their weights directly);
    grouped convolutions are skipped. A layer shared by several parents gets one adapter, seen by all of them.
    Base BatchNorm running statistics still update in training mode (as with any LoRA implementation).

    Args:
        base: the backbone to adapt, or ``{"class_path": ..., "init_args": ...}`` as stored in a weights file
            (so :func:`prefalign.models.loading.build_model` rebuilds a LoRA policy from its file alone).
        rank: rank r of each update.
        alpha: the update is scaled by ``alpha / rank``; default ``rank`` (scale 1).
        targets: layer types to adapt, by name: ``"Linear"``, ``"Conv2d"``.
    """

    def __init__(
        self,
        base: nn.Module | dict,
        rank: int = 8,
        alpha: float | None = None,
        targets: tuple[str, ...] = ("Linear", "Conv2d"),
    ) -> None:
        super().__init__()
        if isinstance(base, dict):
            base = instantiate(base["class_path"], dict(base.get("init_args") or {}))
        if isinstance(base, LoRA):
            raise ValueError(
                "LoRA(base=LoRA(...)): adapters on adapters are not supported; merge the inner one first (LoRA.merged())."
            )
        if getattr(base, "init_args", None) is None:
            raise ValueError(
                f"{type(base).__name__} has no `init_args`; backbones must record their constructor arguments to be adapted and saved."
            )
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}.")
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be positive (or null for alpha = rank), got {alpha!r}.")
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; choose from {sorted(TARGETS)}.")
        # Plain builtins only, so a weights file's copy compares equal after torch.save / load (check_architecture).
        self.init_args = {
            "base": {"class_path": class_path_of(base), "init_args": dict(base.init_args)},
            "rank": rank,
            "alpha": alpha,
            "targets": list(targets),
        }
        self.scale = (alpha if alpha is not None else rank) / rank
        base.requires_grad_(False)  # before wrapping: the new adapters stay trainable
        self.model = base
        kinds = tuple(kind for t in targets for kind in TARGETS[t])
        wrappers: dict[int, LoRALayer] = {}
        for parent, name, child in _children_everywhere(base):
            if type(child) not in kinds or (isinstance(child, nn.Conv2d) and child.groups != 1):
                continue
            if id(child) not in wrappers:
                wrappers[id(child)] = WRAPPERS[type(child)](child, rank, self.scale)
            setattr(parent, name, wrappers[id(child)])
        if not wrappers:
            raise ValueError(f"{type(base).__name__} has no layer of the targeted types {list(targets)} to adapt.")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # __dict__ lookups: during copy/unpickling the instance may not have _modules yet.
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None or name.startswith("_"):
                raise
            return getattr(model, name)

    # ------------------------------------------------------------------ adapters
    def adapted_layers(self) -> list[LoRALayer]:
        return [m for m in self.model.modules() if isinstance(m, LoRALayer)]

    def _adapted_paths(self) -> set[str]:
        # Every path, shared layers included: state_dict() lists a shared layer's tensors once per path.
        return {p for p, m in self.model.named_modules(remove_duplicate=False) if isinstance(m, LoRALayer)}

    @staticmethod
    def _split(key: str) -> tuple[str, str, str]:
        """``"<owner>.<role>.<name>"`` → (owner, role, name); for a wrapped layer, role is base / lora_A / lora_B."""
        path, _, name = key.rpartition(".")
        owner, _, role = path.rpartition(".")
        return owner, role, name

    def _is_adapter_key(self, key: str, paths: set[str]) -> bool:
        owner, role, _ = self._split(key)
        return owner in paths and role != "base"

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable LoRA parameters (every A and B)."""
        paths = self._adapted_paths()
        return (p for k, p in self.model.named_parameters() if self._is_adapter_key(k, paths))

    def base_parameters(self) -> Iterator[nn.Parameter]:
        """The frozen base parameters (the adapted layers' ``.base`` and every layer left alone)."""
        paths = self._adapted_paths()
        return (p for k, p in self.model.named_parameters() if not self._is_adapter_key(k, paths))

    def reset_adapters(self) -> None:
        """Fresh adapters (A random, B zero): the model is the base model again."""
        for layer in self.adapted_layers():
            layer.reset_adapter()

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """Inside, ``forward`` is the base model's (bit for bit): every adapter branch is skipped. Nests; restores on exit."""
        layers = self.adapted_layers()
        previous = [layer.enabled for layer in layers]
        for layer in layers:
            layer.enabled = False
        try:
            yield
        finally:
            for layer, enabled in zip(layers, previous):
                layer.enabled = enabled

    # ------------------------------------------------------------------ base weights
    def base_state_dict(self, merge: bool = False) -> dict[str, Tensor]:
        """The base architecture's state dict (adapter tensors dropped, ``<p>.base.weight`` → ``<p>.weight``);
        with ``merge``, each adapted weight is ``W + scale * BA``."""
        paths = self._adapted_paths()
        layers = dict(self.model.named_modules(remove_duplicate=False))
        state = {}
        for key, value in self.model.state_dict().items():
            owner, role, name = self._split(key)
            if owner not in paths:
                state[key] = value
            elif role == "base":
                if merge and name == "weight":
                    value = value + layers[owner].delta_weight().detach().to(value.dtype)
                state[f"{owner}.{name}"] = value
        return state

    def load_base_weights(self, path: str) -> dict:
        """Load a weights file of the *base* architecture (the reference) into the base layers; adapters are reset
        (B = 0), so the model is then exactly that file's model. Returns the file's payload."""
        payload = load_weights(path)
        expected = self.init_args["base"]
        if payload["class_path"] != expected["class_path"] or payload["init_args"] != expected["init_args"]:
            raise CheckpointError(
                f"{path} holds a {payload['class_path']}({payload['init_args']}), but this LoRA adapts a "
                f"{expected['class_path']}({expected['init_args']}). Point the reference to a weights file of the LoRA's "
                "base architecture, or change the LoRA's `base`."
            )
        paths = self._adapted_paths()
        state = {}
        for key, value in payload["state_dict"].items():
            owner, _, name = key.rpartition(".")
            state[f"{owner}.base.{name}" if owner in paths else key] = value
        wanted = {k for k in self.model.state_dict() if not self._is_adapter_key(k, paths)}
        if set(state) != wanted:
            # Checked before loading anything, so a refused file leaves the model untouched.
            raise CheckpointError(
                f"{path} does not match the LoRA's base: missing {sorted(wanted - set(state))[:5]}, unexpected "
                f"{sorted(set(state) - wanted)[:5]}. Re-export it with prefalign."
            )
        self.model.load_state_dict(state, strict=False)  # the adapter keys, the only ones left out, are reset next
        self.reset_adapters()
        return payload

    def merged(self) -> nn.Module:
        """A plain base-architecture module with every update folded in (``W + scale * BA``): for export
        (``save_weights(lora.merged(), path)`` writes a base-architecture file) and adapter-free inference speed.
        A copy; this model is left as it is."""
        model = copy.deepcopy(self.model)
        done: dict[int, tuple[LoRALayer, nn.Module]] = {}  # the wrapper kept alive, so its id is not reused
        with torch.no_grad():
            for parent, name, child in _children_everywhere(model):
                if isinstance(child, LoRALayer):
                    if id(child) not in done:  # a shared layer is merged once
                        child.base.weight.add_(child.delta_weight().to(child.base.weight.dtype))
                        done[id(child)] = (child, child.base)
                    setattr(parent, name, done[id(child)][1])
        return model.requires_grad_(True)


def check_adapters_reference(policy: nn.Module) -> None:
    """Refuse a policy whose adapters-off view cannot stand for a frozen reference; the message names the fix."""
    if not isinstance(policy, LoRA):
        raise ValueError(
            f"model.reference_from_adapters=true needs a LoRA policy, but the backbone is a {type(policy).__name__}: wrap it, "
            "e.g. backbone: {class_path: prefalign.models.LoRA, init_args: {base: <your backbone>, rank: 8}}, "
            "or set model.reference_from_adapters=false (a frozen copy loaded from model.reference_ckpt)."
        )
    running = [
        n
        for n, m in policy.model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if running:
        raise ValueError(
            f"model.reference_from_adapters=true with BatchNorm layers ({running[:3]}): their running statistics update while "
            "the policy trains, so the adapters-off reference would drift away from model.reference_ckpt. Set "
            "model.reference_from_adapters=false (a frozen copy), or use a backbone with GroupNorm/LayerNorm."
        )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside, each submodule's own mode restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class AdaptersOffReference(nn.Module):
    """The frozen reference of a LoRA policy as a read-only view: its forward is the policy with its adapters off,
    in eval mode, under ``no_grad`` — i.e. the base model the adapters started from, with no second copy of
    the weights (Diffusion-DPO's reference, Wallace et al., 2023, arXiv:2311.12908).

    The policy is held as a plain attribute, not a submodule, so it is not saved, moved or DDP-wrapped twice.
    ``parameters()`` yields the policy's frozen base parameters: they live wherever the policy does (what
    :attr:`AlignmentModule.reference` reads to place a reference) and none requires grad.
    """

    def __init__(self, policy: LoRA) -> None:
        super().__init__()
        check_adapters_reference(policy)
        object.__setattr__(self, "policy", policy)
        self.eval()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Eval mode like a frozen copy (no dropout), restored after, so the policy's own training mode is untouched.
        with torch.no_grad(), self.policy.adapters_disabled(), _eval_mode(self.policy):
            return self.policy(*args, **kwargs)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.policy.base_parameters()

    def extra_repr(self) -> str:
        return f"policy={type(self.policy.model).__name__} with adapters disabled"
