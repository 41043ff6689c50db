"""The architectures a weights file may name: an allowlist, checked as a string before anything is imported.

A weights file records its backbone as ``class_path`` + ``init_args`` and :func:`prefalign.models.loading.instantiate`
rebuilds it. Importing and calling whatever a file names would let a file that passes ``torch.load(weights_only=True)``
run any callable (``os.system``), so only these classes are ever built from a file:

- every ``nn.Module`` exported by :mod:`prefalign.models` (SeedCNN, LeNet, LoRA, TinyTransformer, ConditionalUNet, ...);
- classes registered with :func:`register_architecture`: a user's own backbone (call it from your code), and the
  backbone a config names in ``model.backbone`` (the alignment module registers it: the user chose that class).

Families that load models another way (e.g. Hugging Face ``from_pretrained`` on a directory) do not go through
``class_path`` at all; a family that does want its classes rebuilt from weights files registers them here.
"""

from __future__ import annotations

from torch import nn

# class path (as recorded by prefalign.checkpoint.class_path_of) -> the class; filled by register_architecture.
_REGISTERED: dict[str, type[nn.Module]] = {}


def _builtin() -> dict[str, type[nn.Module]]:
    import prefalign.models as models  # our own package: importing it runs nothing a file chose

    classes = (getattr(models, name) for name in models.__all__)
    return {f"prefalign.models.{c.__name__}": c for c in classes if isinstance(c, type) and issubclass(c, nn.Module)}


def register_architecture(cls: type[nn.Module]) -> type[nn.Module]:
    """Allow weights files to name ``cls`` (an ``nn.Module`` subclass recording ``init_args``); returns ``cls``, so it
    also works as a class decorator. Registering the same class twice is harmless."""
    from prefalign.checkpoint import class_path_of_class

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_architecture takes an nn.Module subclass, got {cls!r}.")
    _REGISTERED[class_path_of_class(cls)] = cls
    return cls


def allowed_architectures() -> dict[str, type[nn.Module]]:
    """Every class path a weights file may name, with its class."""
    return {**_builtin(), **_REGISTERED}


def resolve_architecture(class_path: object) -> type[nn.Module] | None:
    """The class for ``class_path`` if it is allowed, else None. Looks the string up; never imports it."""
    if not isinstance(class_path, str):
        return None
    cls = allowed_architectures().get(class_path)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


__all__ = ["register_architecture", "allowed_architectures", "resolve_architecture"]
