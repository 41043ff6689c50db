"""Every objective runs on every registered family, or is refused when the module is built, with the declared reason.

This is what the objective table's *families* column claims (``scripts/objective_table.py``, from the registry).
"""

import copy
import inspect

import pytest
import torch

import prefalign.objectives as objectives
from prefalign.checkpoint import save_weights
from prefalign.core.module import AlignmentModule
from prefalign.families.base import CAPABILITIES
from prefalign.families.registry import FAMILIES, families_supporting, family_class
from prefalign.objectives import Objective, PPOLite
from tests.families.cases import FAMILY_CASES

OBJECTIVES = sorted(
    name
    for name, obj in vars(objectives).items()
    if inspect.isclass(obj) and (issubclass(obj, Objective) or obj is PPOLite) and obj is not Objective
)


# Modifiers wrap other objectives: each is built around DPO (and WeightedSum around DPO + SFT).
WRAPPED = {
    "FDivergence": lambda: objectives.FDivergence(objectives.DPO(), divergence="js_divergence"),
    "WPO": lambda: objectives.WPO(objectives.DPO()),
    "WeightedSum": lambda: objectives.WeightedSum([objectives.DPO(), objectives.NCA()], weights=[1.0, 0.5]),
    "ReferenceFree": lambda: objectives.ReferenceFree(objectives.DPO()),
}


def build(obj_cls, case):
    if obj_cls.__name__ in WRAPPED:
        return WRAPPED[obj_cls.__name__]()
    return obj_cls() if obj_cls is not PPOLite else PPOLite(k=3, ppo_epochs=1, reward=case.reward)


@pytest.mark.parametrize("family_name", sorted(FAMILY_CASES))
@pytest.mark.parametrize("objective_name", OBJECTIVES)
def test_objective_on_family(objective_name, family_name, tmp_path):
    case = FAMILY_CASES[family_name]()
    objective = build(getattr(objectives, objective_name), case)
    ref_path = save_weights(case.backbone, tmp_path / "ref.pt")
    missing = objective.requires - case.family.capabilities
    able = families_supporting(objective.requires)
    if family_name in FAMILIES:  # the table lists this family for this objective exactly when it runs here
        assert (family_name in able) == (not missing)
    if missing:
        with pytest.raises(ValueError, match=CAPABILITIES[sorted(missing)[0]].split(" (")[0]) as refused:
            AlignmentModule(
                backbone=case.backbone, objective=objective, family=case.family, reference_ckpt=str(ref_path)
            )
        assert f"The registered families that can run it: {', '.join(able)}." in str(refused.value)
        return
    module = AlignmentModule(
        backbone=case.backbone, objective=objective, family=case.family, reference_ckpt=str(ref_path)
    )
    reference = copy.deepcopy(case.backbone).eval().requires_grad_(False)
    family = case.family
    if isinstance(objective, PPOLite):
        torch.manual_seed(0)
        rollout = family.rollout(module.policy, case.prompts, objective.k)
        rewards = objective.reward(rollout)
        assert rewards.shape == rollout.responses.shape[:2]
        with torch.no_grad():
            ref = family.response_logps(reference, rollout)
        new = family.response_logps(module.policy, rollout)
        # Policy = reference and on-policy: every ratio is exactly 1 and the KL is 0.
        torch.testing.assert_close(new.tokens, rollout.old_logps)
        out = objective.loss(new.tokens, rollout.old_logps, objective.advantages(rewards), rollout.mask, ref.tokens)
        assert out.metrics["ppo/kl"].abs().item() < 1e-5
    else:
        extra = (
            {"ld_alpha": objective.ld_alpha} if getattr(objective, "ld_alpha", None) is not None else {}
        )  # as the module passes it
        pair = family.pair_logps(
            module.policy,
            reference,
            case.pairs,
            length_normalized=objective.length_normalized,
            wpo_weights="wpo_weights" in objective.requires,
            **extra,
        )
        for field in ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected"):
            value = getattr(pair, field)
            assert value is not None and value.shape == (len(pair.policy_chosen),) and value.dtype == torch.float32
        assert pair.policy_chosen.requires_grad and not pair.reference_chosen.requires_grad
        torch.testing.assert_close(pair.policy_chosen, pair.reference_chosen)  # the policy starts as the reference
        out = objective(pair)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in module.policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_every_registered_family_has_a_case():
    missing = sorted(set(FAMILIES) - set(FAMILY_CASES))
    assert not missing, f"registered families without a FamilyCase in tests/families/cases.py: {', '.join(missing)}"
    for name in FAMILIES:
        assert type(FAMILY_CASES[name]().family) is family_class(name), (
            f"FAMILY_CASES[{name!r}] is not the registered {name} family"
        )
