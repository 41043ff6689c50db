"""Interface checks shared by every preference objective: validation, fp32, metrics, finite extremes, config."""

import pytest
import torch

from prefalign.objectives import DPO, IPO, KTO, ORPO, RPO, SFT, Hinge, Objective, PairLogps, RobustDPO, SimPO

ALL = [
    SFT(),
    DPO(),
    DPO(label_smoothing=0.1),
    RobustDPO(label_smoothing=0.2),
    IPO(),
    Hinge(),
    RPO(),
    SimPO(),
    KTO(),
    ORPO(),
]
IDS = [f"{type(o).__name__}{i}" for i, o in enumerate(ALL)]


def full_pair(n=4, dtype=torch.float32, grad=False, kl=False) -> PairLogps:
    g = torch.Generator().manual_seed(0)
    t = lambda: (-torch.rand(n, generator=g) * 3).to(dtype).requires_grad_(grad)  # noqa: E731
    return PairLogps(t(), t(), t(), t(), kl=torch.rand(n, generator=g) if kl else None)


@pytest.mark.parametrize("obj", ALL, ids=IDS)
def test_output_contract(obj: Objective):
    out = obj(full_pair())
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32
    assert "logps/chosen" in out.metrics
    for k, v in out.metrics.items():
        assert v.dim() == 0 and not v.requires_grad, k
    if obj.needs_pairs:
        assert {
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
            "logps/rejected",
        } <= out.metrics.keys()


@pytest.mark.parametrize("obj", ALL, ids=IDS)
def test_low_precision_inputs_are_computed_in_fp32(obj: Objective):
    out = obj(full_pair(dtype=torch.bfloat16))
    assert out.loss.dtype == torch.float32
    ref = obj(full_pair(dtype=torch.bfloat16).float())
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)


@pytest.mark.parametrize("obj", ALL, ids=IDS)
def test_extreme_inputs_give_finite_loss_and_grads(obj: Objective):
    vals = [-1e-9, -50.0, -1e-9, 0.0, -50.0]
    pc = torch.tensor(vals, requires_grad=True)
    pr = torch.tensor(vals[::-1], requires_grad=True)
    rc = torch.tensor([-50.0, -1e-9, 0.0, -1e-9, -50.0])
    rr = torch.tensor([0.0, -50.0, -1e-9, -50.0, -1e-9])
    out = obj(PairLogps(pc, pr, rc, rr, kl=torch.tensor([0.0, 30.0, 1e-9, 5.0, 0.0])))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(pc.grad).all()
    assert pr.grad is None or torch.isfinite(pr.grad).all()  # SFT ignores the rejected label
    assert all(torch.isfinite(v) for v in out.metrics.values())


@pytest.mark.parametrize(
    "obj", [o for o in ALL if o.needs_reference], ids=[i for o, i in zip(ALL, IDS) if o.needs_reference]
)
def test_missing_reference_names_the_fix(obj: Objective):
    p = full_pair()
    with pytest.raises(
        ValueError, match=rf"objective {type(obj).__name__} needs reference log-probs.*model\.reference_ckpt"
    ):
        obj(PairLogps(p.policy_chosen, p.policy_rejected, None, None))


@pytest.mark.parametrize("obj", [o for o in ALL if o.needs_pairs], ids=[i for o, i in zip(ALL, IDS) if o.needs_pairs])
def test_missing_pairs_names_the_fix(obj: Objective):
    p = full_pair()
    with pytest.raises(
        ValueError, match=rf"objective {type(obj).__name__} needs preference pairs.*PreferenceDataModule"
    ):
        obj(PairLogps(p.policy_chosen, None, p.reference_chosen, None))


def test_flags():
    assert (SFT.needs_reference, SFT.needs_pairs) == (False, False)
    assert (SimPO.needs_reference, ORPO.needs_reference) == (False, False)
    assert all(c.needs_reference and c.needs_pairs for c in (DPO, RobustDPO, IPO, Hinge, RPO, KTO))


def test_shape_mismatch_raises():
    p = full_pair(n=4)
    with pytest.raises(ValueError, match="policy_rejected has shape"):
        DPO()(PairLogps(p.policy_chosen, p.policy_rejected[:3], p.reference_chosen, p.reference_rejected))
    with pytest.raises(ValueError, match=r"must be \[B\]"):
        SFT()(PairLogps(p.policy_chosen[:, None], None, None, None))
    with pytest.raises(ValueError, match="kl has shape"):
        KTO()(
            PairLogps(p.policy_chosen, p.policy_rejected, p.reference_chosen, p.reference_rejected, kl=torch.zeros(3))
        )


def test_objectives_have_no_parameters():
    assert all(len(list(o.parameters())) == 0 for o in ALL)


def test_config_instantiation_via_class_path():
    from jsonargparse import ArgumentParser
    from torch import nn

    parser = ArgumentParser()
    parser.add_argument("--objective", type=nn.Module)
    cfg = parser.parse_args(["--objective", '{"class_path": "prefalign.objectives.DPO", "init_args": {"beta": 0.3}}'])
    obj = parser.instantiate_classes(cfg).objective
    assert isinstance(obj, DPO) and obj.beta == 0.3 and obj.label_smoothing == 0.0
    cfg = parser.parse_args(
        [
            "--objective",
            '{"class_path": "prefalign.objectives.PPOLite", "init_args": {"k": 4, "reward": {"class_path": "prefalign.objectives.RewardModelConfidence", "init_args": {"ckpt": "rm.pt"}}}}',
        ]
    )
    ppo = parser.instantiate_classes(cfg).objective
    assert ppo.k == 4 and ppo.reward.ckpt == "rm.pt"
