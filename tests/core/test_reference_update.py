"""TR-DPO's ReferenceUpdate: the mix it applies, when it applies it, and that it survives a checkpoint."""

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from prefalign.callbacks import ReferenceUpdate
from prefalign.cli import main
from tests.conftest import CONFIGS, SYNTHETIC_ARGS


def _module(ref_value: float, policy_value: float):
    reference, policy = nn.Linear(2, 1), nn.Linear(2, 1)
    for m, v in ((reference, ref_value), (policy, policy_value)):
        for p in m.parameters():
            nn.init.constant_(p, v)
    return SimpleNamespace(reference=reference, _reference=reference, policy=policy, recompute_reference=False)


def test_soft_mix_every_n_optimizer_steps_and_recompute_switched_on():
    module = _module(ref_value=0.0, policy_value=1.0)
    callback = ReferenceUpdate(alpha=0.25, every_n_steps=2)
    callback.on_fit_start(None, module)
    assert module.recompute_reference  # cached reference log-probs would be stale
    for step in (1, 2, 2, 3, 4):  # the repeated 2 is a second micro-batch of one optimizer step (accumulation)
        callback.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, 0)
    # two updates: 0 -> 0.25 -> 0.25 + 0.25 * (1 - 0.25) = 0.4375
    assert callback.updates == 2
    for p in module.reference.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.4375))


def test_hard_copy():
    module = _module(ref_value=-3.0, policy_value=2.0)
    callback = ReferenceUpdate(alpha=1.0, every_n_steps=3)
    callback.on_fit_start(None, module)
    callback.on_train_batch_end(SimpleNamespace(global_step=2), module, None, None, 0)
    assert all(torch.all(p == -3.0) for p in module.reference.parameters())
    callback.on_train_batch_end(SimpleNamespace(global_step=3), module, None, None, 0)
    assert all(torch.all(p == 2.0) for p in module.reference.parameters())


@pytest.mark.parametrize(
    "kwargs,message",
    [({"alpha": 0.0}, "alpha=0.0 is out of range"), ({"every_n_steps": 0}, "every_n_steps=0 is out of range")],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReferenceUpdate(**kwargs)


def test_trdpo_run_checkpoints_the_moved_reference(tiny_reference, in_tmp):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "seed_dpo.yaml"),
            *SYNTHETIC_ARGS,
            f"--model.reference_ckpt={tiny_reference}",
            "--model.backbone.channels=4",
            "--trainer.max_epochs=1",
            "--model.log_figures=false",
            "--trainer.callbacks+=prefalign.callbacks.ReferenceUpdate",
            "--trainer.callbacks.alpha=1.0",
            "--trainer.callbacks.every_n_steps=1",
            "--test_after_fit=true",
        ]
    )
    ckpt = torch.load(in_tmp / "runs/seed_dpo/version_0/checkpoints/last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ReferenceUpdate"))
    assert state["updates"] == ckpt["global_step"] > 0
    # alpha = 1 after every step: the reference is the policy as of the last step
    policy = {k.removeprefix("policy."): v for k, v in ckpt["state_dict"].items() if k.startswith("policy.")}
    assert policy.keys() == state["reference"].keys()
    for key, value in policy.items():
        torch.testing.assert_close(state["reference"][key], value)
    original = torch.load(tiny_reference, weights_only=True)
    original = original.get("state_dict", original)
    assert any(not torch.equal(state["reference"][k], v) for k, v in original.items() if k in state["reference"])
    # the test after fit measured the policy against the original reference, not the moved one (= the policy)
    results = json.loads((in_tmp / "runs/seed_dpo/version_0/results_test.json").read_text())["metrics"]
    assert results["test/kl_ref_noisy"] > 1e-3


def test_resume_restores_the_moved_reference_not_the_original():
    saved = ReferenceUpdate(alpha=1.0)
    moved = _module(ref_value=0.0, policy_value=5.0)
    saved.on_fit_start(None, moved)
    saved.on_train_batch_end(SimpleNamespace(global_step=1), moved, None, None, 0)
    state = saved.state_dict()

    resumed = ReferenceUpdate(alpha=1.0)
    resumed.load_state_dict(state)
    fresh = _module(ref_value=0.0, policy_value=7.0)  # setup() loaded the original reference again
    resumed.on_fit_start(None, fresh)
    assert resumed.updates == 1 and all(torch.all(p == 5.0) for p in fresh.reference.parameters())
