"""LoRA adapters (prefalign.models.LoRA) and the adapters-off reference: exactness, freezing, files, and a DPO run."""

import copy
import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prefalign.callbacks import ReferenceUpdate
from prefalign.checkpoint import CheckpointError, load_weights, save_weights
from prefalign.cli import main
from prefalign.core.module import AlignmentModule
from prefalign.models import MLP, LeNet, LoRA, SeedCNN
from prefalign.models.loading import check_architecture, load_model
from prefalign.models.lora import AdaptersOffReference, LoRAConv2d, LoRALinear
from prefalign.objectives import DPO
from tests.conftest import CONFIGS, SYNTHETIC_ARGS

X = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
Y = torch.arange(8) % 10


class Denoiserish(nn.Module):
    """A denoiser-shaped backbone: ``forward(x, t, *, y)``, convs (one grouped), GroupNorm, and a Linear used twice."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.init_args = {"width": width}
        self.conv_in = nn.Conv2d(1, width, 3, padding=1)
        self.depthwise = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.GroupNorm(2, width)
        self.shared = nn.Linear(1, width)
        self.also_shared = self.shared  # tied: both names must see one adapter
        self.emb = nn.Embedding(10, width)
        self.conv_out = nn.Conv2d(width, 1, 3, stride=1, padding=1)

    def forward(self, x, t, *, y):
        h = self.conv_in(x) + (self.shared(t[:, None]) + self.also_shared(t[:, None]) + self.emb(y))[:, :, None, None]
        return self.conv_out(F.silu(self.norm(self.depthwise(h))))


def _train_adapters(lora: LoRA, steps: int = 3) -> None:
    opt = torch.optim.Adam(lora.adapter_parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(lora(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_zero_b_init_is_bit_identical_to_the_base():
    for base in (LeNet(), MLP(hidden=(16,), dropout=0.0), SeedCNN(channels=4)):
        base.eval()
        reference = copy.deepcopy(base)
        lora = LoRA(base, rank=4, alpha=8.0).eval()
        assert torch.equal(lora(X), reference(X))
    den = Denoiserish()
    reference = copy.deepcopy(den)
    t, y = torch.rand(8), torch.arange(8)
    assert torch.equal(LoRA(den, rank=2)(X, t, y=y), reference(X, t, y=y))  # any signature, keywords included


def test_adapters_disabled_is_bit_identical_to_the_base_after_training():
    base = LeNet()
    reference = copy.deepcopy(base)
    lora = LoRA(base, rank=4)
    _train_adapters(lora)
    with torch.no_grad():
        adapted = lora(X)
        assert not torch.allclose(adapted, reference(X), atol=1e-4)  # the adapters learned something
        with lora.adapters_disabled():
            assert torch.equal(lora(X), reference(X))
            with lora.adapters_disabled():  # nesting keeps them off, and the inner exit does not turn them on
                pass
            assert torch.equal(lora(X), reference(X))
        assert torch.equal(lora(X), adapted)  # back on after the block


def test_only_adapters_train_and_layers_are_wrapped_as_documented():
    den = Denoiserish()
    lora = LoRA(den, rank=2)
    trainable = {k for k, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in k or ".lora_B." in k for k in trainable)
    assert not any(p.requires_grad for p in lora.base_parameters())
    assert {id(p) for p in lora.adapter_parameters()} == {id(p) for p in lora.parameters() if p.requires_grad}
    assert isinstance(den.conv_in, LoRAConv2d) and isinstance(den.conv_out, LoRAConv2d)
    assert type(den.depthwise) is nn.Conv2d  # grouped convolutions are skipped
    assert isinstance(den.shared, LoRALinear) and den.also_shared is den.shared  # one adapter for a tied layer
    assert {
        "model.conv_in.base.weight",
        "model.conv_in.lora_A.weight",
        "model.conv_in.lora_B.weight",
        "model.emb.weight",
    } <= set(lora.state_dict())
    assert set(lora.base_state_dict()) == set(Denoiserish().state_dict())
    only_linear = LoRA(LeNet(), targets=("Linear",))
    assert not any(isinstance(m, LoRAConv2d) for m in only_linear.modules()) and any(
        isinstance(m, LoRALinear) for m in only_linear.modules()
    )
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        LoRA(LeNet(), targets=("Conv1d",))
    with pytest.raises(ValueError, match="rank"):
        LoRA(LeNet(), rank=0)


def test_weights_file_round_trip_rebuilds_the_lora(tmp_path):
    lora = LoRA(
        {"class_path": "prefalign.models.MLP", "init_args": {"hidden": [16], "dropout": 0.0}}, rank=3, alpha=6.0
    )
    _train_adapters(lora)
    path = save_weights(lora, tmp_path / "lora.pt")
    payload = load_weights(path)
    assert payload["class_path"] == "prefalign.models.LoRA"
    assert payload["init_args"] == {
        "base": {
            "class_path": "prefalign.models.MLP",
            "init_args": {"hidden": [16], "num_classes": 10, "dropout": 0.0},
        },
        "rank": 3,
        "alpha": 6.0,
        "targets": ["Linear", "Conv2d"],
    }
    rebuilt = load_model(path)
    assert isinstance(rebuilt, LoRA) and rebuilt.scale == 2.0
    assert torch.equal(rebuilt.eval()(X), lora.eval()(X))
    check_architecture(lora, path)  # init_args compare equal after the torch.save / load round trip


def test_load_base_weights_loads_the_reference_and_refuses_another_architecture(tmp_path):
    reference = LeNet().eval()
    path = save_weights(reference, tmp_path / "lenet.pt")
    lora = LoRA(LeNet(), rank=4).eval()
    _train_adapters(lora)
    lora.load_base_weights(str(path))
    assert torch.equal(lora(X), reference(X))  # base weights loaded and adapters reset to B = 0
    assert all(
        torch.equal(layer.lora_B.weight, torch.zeros_like(layer.lora_B.weight)) for layer in lora.adapted_layers()
    )

    before = {k: v.clone() for k, v in lora.state_dict().items()}
    for other, holds in (
        (SeedCNN(channels=4), r"SeedCNN\(\{'channels': 4"),
        (LeNet(num_classes=5), r"LeNet\(\{'num_classes': 5\}\)"),
    ):
        bad = save_weights(other, tmp_path / "other.pt")
        with pytest.raises(
            CheckpointError,
            match=rf"holds a prefalign\.models\.{holds}.*this LoRA adapts a prefalign\.models\.LeNet\(\{{'num_classes': 10\}}\)",
        ):
            lora.load_base_weights(str(bad))
    assert all(torch.equal(v, before[k]) for k, v in lora.state_dict().items())  # a refused file changes nothing


def test_merged_is_a_plain_base_model_equal_to_the_adapted_one(tmp_path):
    for base in (LeNet(), SeedCNN(channels=4)):
        lora = LoRA(base, rank=4, alpha=2.0)
        _train_adapters(lora, steps=5)
        merged = lora.merged().eval()
        assert type(merged) is type(base) and set(merged.state_dict()) == set(type(base)(**base.init_args).state_dict())
        with torch.no_grad():
            torch.testing.assert_close(merged(X), lora.eval()(X), atol=1e-6, rtol=0)
            with lora.adapters_disabled():
                assert not torch.allclose(merged(X), lora(X), atol=1e-4)  # the update really is folded in
        assert len(lora.adapted_layers()) > 0  # a copy: the LoRA keeps its adapters
        exported = load_model(save_weights(merged, tmp_path / "merged.pt"))
        assert type(exported) is type(base)


def test_adapters_off_reference_is_a_frozen_view_not_a_submodule():
    mlp = MLP(hidden=(16,), dropout=0.5)
    reference = copy.deepcopy(mlp).eval()
    model = AlignmentModule(
        backbone=LoRA(mlp, rank=4), objective=DPO(), reference_ckpt="unused.pt", reference_from_adapters=True
    )
    policy = model.policy
    _train_adapters(policy)
    view = AdaptersOffReference(policy)
    object.__setattr__(model, "_reference", view)
    policy.train()
    out = model.reference(X)
    assert torch.equal(out, reference(X)) and not out.requires_grad  # eval mode (no dropout), adapters off, no graph
    assert policy.training and all(m.training for m in policy.modules())  # the policy's own mode is restored
    assert next(view.parameters()).device == model.device and not any(p.requires_grad for p in view.parameters())
    assert not list(view.children()) and "_reference" not in dict(model.named_modules())
    assert all(k.startswith("policy.") or k.startswith("family.") for k in model.state_dict())
    optimizer = model.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in policy.adapter_parameters()}


def test_reference_from_adapters_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="needs a LoRA policy.*prefalign.models.LoRA"):
        AlignmentModule(backbone=LeNet(), objective=DPO(), reference_ckpt="ref.pt", reference_from_adapters=True)
    with_bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with_bn.init_args = {}
    with pytest.raises(ValueError, match="BatchNorm"):
        AlignmentModule(backbone=LoRA(with_bn), objective=DPO(), reference_ckpt="ref.pt", reference_from_adapters=True)
    with pytest.raises(ValueError, match="reference_ckpt"):
        AlignmentModule(backbone=LoRA(LeNet()), reference_from_adapters=True)
    module = SimpleNamespace(_reference=object(), reference_from_adapters=True, recompute_reference=True)
    with pytest.raises(ValueError, match="reference_from_adapters=false"):
        ReferenceUpdate(alpha=1.0).on_fit_start(None, module)


def test_trdpo_mixes_a_lora_policy_into_its_base_architecture_reference():
    lora = LoRA(LeNet(), rank=4)
    _train_adapters(lora)
    reference = LeNet().eval()
    module = SimpleNamespace(
        _reference=reference, reference=reference, policy=lora, recompute_reference=True, reference_from_adapters=False
    )
    callback = ReferenceUpdate(alpha=1.0)
    callback.on_fit_start(None, module)
    callback.on_train_batch_end(SimpleNamespace(global_step=1), module, None, None, 0)
    with torch.no_grad():
        torch.testing.assert_close(
            reference(X), lora.eval()(X), atol=1e-6, rtol=0
        )  # alpha = 1: a copy of the merged policy


def test_dpo_loss_is_exactly_ln2_at_init(tiny_reference):
    model = AlignmentModule(
        backbone=LoRA(SeedCNN(channels=4), rank=4),
        objective=DPO(beta=0.1),
        reference_ckpt=str(tiny_reference),
        reference_from_adapters=True,
        log_figures=False,
    )
    model.setup("fit")
    assert isinstance(model.reference, AdaptersOffReference)
    batch = {"x": X, "chosen": Y, "rejected": (Y + 3) % 10}
    pair = model.family.pair_logps(model.policy, model.reference, batch, recompute_reference=True)
    assert torch.equal(pair.policy_chosen.detach(), pair.reference_chosen) and pair.policy_chosen.requires_grad
    loss = model.objective(pair).loss
    assert abs(loss.item() - math.log(2)) < 1e-7
    assert torch.equal(
        model.policy(X), load_model(tiny_reference)(X)
    )  # the policy starts as the reference file's model


LORA_SEED_CNN = json.dumps(
    {
        "class_path": "prefalign.models.LoRA",
        "init_args": {"base": {"class_path": "prefalign.models.SeedCNN", "init_args": {"channels": 4}}, "rank": 4},
    }
)


def test_dpo_with_the_adapters_off_reference_through_the_cli(tiny_reference, in_tmp):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "seed_dpo.yaml"),
            *SYNTHETIC_ARGS,
            f"--model.reference_ckpt={tiny_reference}",
            f"--model.backbone={LORA_SEED_CNN}",
            "--model.reference_from_adapters=true",
            "--model.recompute_reference=true",
            "--model.objective.beta=1.0",
            "--model.optimizer.lr=0.01",
            "--data.init_args.strategy=hard_negative",
            "--trainer.max_epochs=1",
            "--trainer.log_every_n_steps=1",
            "--model.log_figures=false",
        ]
    )
    run = in_tmp / "runs/seed_dpo/version_0"
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/loss")]
    first = min(rows, key=lambda r: int(r["step"]))
    assert (
        int(first["step"]) == 0 and abs(float(first["train/loss"]) - math.log(2)) < 1e-7
    )  # policy == reference at step 0
    assert float(rows[-1]["train/loss"]) < math.log(2)
    policy = load_model(run / "policy.pt")
    assert isinstance(policy, LoRA)
    reference = load_weights(tiny_reference)["state_dict"]
    base = policy.base_state_dict()
    assert set(base) == set(reference) and all(
        torch.equal(base[k], reference[k]) for k in reference
    )  # the base never moved
    assert any(layer.lora_B.weight.abs().sum() > 0 for layer in policy.adapted_layers())  # the adapters did
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert all(k.startswith("policy.") or k.startswith("family.") for k in ckpt["state_dict"])  # no second copy saved
    metrics = json.loads((run / "results_test.json").read_text())["metrics"]
    assert metrics["test/kl_ref_noisy"] > 0  # the reference (adapters off) and the trained policy differ


def test_a_missing_reference_is_trained_with_the_loras_base_architecture(in_tmp):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "seed_dpo.yaml"),
            f"--reference_recipe={CONFIGS / 'sft.yaml'}",
            *SYNTHETIC_ARGS,
            f"--model.backbone={LORA_SEED_CNN}",
            "--model.reference_from_adapters=true",
            "--trainer.max_epochs=1",
            "--model.log_figures=false",
            "--test_after_fit=false",
        ]
    )
    reference = load_weights(in_tmp / "artifacts/reference/seed_cnn.pt")
    assert (reference["class_path"], reference["init_args"]) == (
        "prefalign.models.SeedCNN",
        {"channels": 4, "num_classes": 10},
    )
    assert load_weights(in_tmp / "runs/seed_dpo/version_0/policy.pt")["class_path"] == "prefalign.models.LoRA"
