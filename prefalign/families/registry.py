"""The registered model families: the ones the objective table lists and the refusal message names.

A family is registered by the dotted path of its class, and imported only when asked for: the registry is read by
:func:`~prefalign.families.base.check_capabilities`, which every family's module imports, so importing the families
here would make an import cycle. Registering a new family is one line in :data:`FAMILIES` (and a ``FamilyCase`` in
``tests/families/cases.py``, which a test demands).

Which objectives a family runs is decided by one rule, the module's (:func:`~prefalign.families.base.check_capabilities`)
and ``tests/families/test_every_objective_on_every_family.py``'s: the family provides every capability the objective
``requires``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

#: name → ``module.Class`` of every family shipped with prefalign (the name is what the objective table prints).
FAMILIES: dict[str, str] = {
    "classifier": "prefalign.families.classifier.ClassifierFamily",
    "language": "prefalign.families.language.LanguageFamily",
    "denoiser": "prefalign.families.denoiser.DenoiserFamily",
    "hf": "prefalign.families.hf.HFCausalLMFamily",
}


def family_class(name: str) -> type:
    """The registered family class called ``name`` (imported on first use)."""
    if name not in FAMILIES:
        raise KeyError(f"no model family {name!r} is registered; registered: {', '.join(FAMILIES)}")
    module, _, cls = FAMILIES[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def capabilities(name: str) -> frozenset[str]:
    """What the registered family ``name`` provides (its class's ``capabilities``)."""
    return frozenset(family_class(name).capabilities)


def families_supporting(requires: Iterable[str]) -> list[str]:
    """The registered families that provide every capability in ``requires``, in registration order."""
    needs = frozenset(requires)
    return [name for name in FAMILIES if needs <= capabilities(name)]


__all__ = ["FAMILIES", "family_class", "capabilities", "families_supporting"]
