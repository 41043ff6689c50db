"""Diffusion-DPO end to end on synthetic digits (pretrain → judges → mine → DPO → test) and the `sample` command."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from prefalign.checkpoint import load_weights, save_weights
from prefalign.cli import main
from prefalign.models import ConditionalUNet, LeNet
from tests.conftest import CONFIGS

TINY_UNET = '{"class_path": "prefalign.models.ConditionalUNet", "init_args": {"channels": [8, 16], "time_dim": 32, "groups": 4}}'


def tiny_args(tmp_path, judge_min=0.8):
    return [
        f"--model.backbone={TINY_UNET}",
        "--data.init_args.source=synthetic",
        "--data.init_args.synthetic_size=[600, 200]",
        "--data.init_args.val_size=100",
        f"--model.family.init_args.judge_dir={tmp_path / 'judges'}",
        f"--model.family.init_args.judge_min_accuracy={judge_min}",
        "--model.family.init_args.val_per_class=3",
        "--model.family.init_args.test_per_class=4",
        "--model.family.init_args.sample_steps=2",
        "--model.family.init_args.num_timesteps=100",
        "--model.family.init_args.grid_per_class=2",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--trainer.enable_progress_bar=false",
    ]


def tiny_dpo_args(tmp_path, reference, cache_dir):
    """`fit` of configs/diffusion_dpo.yaml on the tiny denoiser, mining a few samples per class. A barely trained denoiser
    rarely convinces a judge: accept and reject around chance so that pairs exist."""
    return [
        "fit",
        "--config",
        str(CONFIGS / "diffusion_dpo.yaml"),
        *tiny_args(tmp_path),
        f"--model.reference_ckpt={reference}",
        f"--data.init_args.judge_dir={tmp_path / 'judges'}",
        "--data.init_args.judge_min_accuracy=0.8",
        f"--data.init_args.cache_dir={cache_dir}",
        "--data.init_args.per_class=8",
        "--data.init_args.sample_steps=2",
        "--data.init_args.accept_above=0.1",
        "--data.init_args.reject_below=0.1",
        "--data.init_args.batch_size=8",
    ]


def test_recipes_and_the_lora_overlay_build_the_reference_architecture(capsys):
    """configs/diffusion_dpo.yaml loads the weights configs/diffusion_pretrain.yaml trains, and configs/model/lora.yaml
    wraps that same UNet: channels changed in one file only fail here, not after a reference has trained."""

    def backbone(*configs: str) -> dict:
        with pytest.raises(SystemExit):
            main(["fit", *[arg for c in configs for arg in ("--config", str(CONFIGS / c))], "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)["model"]["backbone"]

    reference = backbone("diffusion_pretrain.yaml")
    assert reference["class_path"] == "prefalign.models.ConditionalUNet"
    assert backbone("diffusion_dpo.yaml") == reference
    lora = backbone("diffusion_dpo.yaml", "model/lora.yaml")
    assert lora["class_path"] == "prefalign.models.LoRA" and lora["init_args"]["base"] == reference


@pytest.fixture(scope="module")
def tiny_denoiser(tmp_path_factory):
    """A tiny denoiser trained briefly on synthetic digits through configs/diffusion_pretrain.yaml."""
    tmp = tmp_path_factory.mktemp("denoiser")
    ref = tmp / "denoiser.pt"
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "diffusion_pretrain.yaml"),
            *tiny_args(tmp),
            f"--model.export_path={ref}",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=6",
            "--trainer.limit_val_batches=1",
            "--test_after_fit=false",
        ]
    )
    return tmp, ref


def test_pretrain_exports_a_denoiser_with_its_schedule(tiny_denoiser):
    tmp, ref = tiny_denoiser
    payload = load_weights(ref)
    assert payload["class_path"] == "prefalign.models.ConditionalUNet"
    assert payload["meta"]["noise_schedule"] == {
        "num_timesteps": 100,
        "kind": "linear",
        "beta_start": 1e-4,
        "beta_end": 0.02,
    }
    metrics = (next((tmp / "runs" / "diffusion_pretrain").glob("version_*")) / "metrics.csv").read_text()
    for key in (
        "val/eps_mse",
        "val/eps_mse_t0",
        "val/error_rate",
        "val/fid",
        "val/diversity",
        "val/p_class",
        "val/real/diversity",
    ):
        assert key in metrics


def tiny_pairs_data(tiny_denoiser, cache: str, **settings):
    """A DiffusionPreferenceDataModule on synthetic digits mining the tiny reference, pairs cached under tmp/<cache>.
    Accepts and rejects around chance, so that a barely trained denoiser gives pairs."""
    from prefalign.data.diffusion_pairs import DiffusionPreferenceDataModule

    tmp, ref = tiny_denoiser
    return DiffusionPreferenceDataModule(
        source="synthetic",
        synthetic_size=(600, 200),
        val_size=100,
        sample_steps=2,
        accept_above=0.1,
        reject_below=0.1,
        judge_dir=str(tmp / "judges"),
        judge_min_accuracy=0.8,
        cache_dir=str(tmp / cache),
        reference_ckpt=str(ref),
        **settings,
    )


def test_mining_leaves_the_global_random_state_alone_cached_or_not(tiny_denoiser):
    """Mining builds the reference and a judge, which draws from torch's global RNG; were it left drawn, a run that
    mines would train on other noise than the same run reading the pairs from the cache."""

    def mine() -> dict:
        data = tiny_pairs_data(tiny_denoiser, "rng-pairs", per_class=4)
        torch.manual_seed(0)
        data.setup("fit")
        assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())
        return data.mining_stats

    assert mine()["mining/from_cache"] == 0.0 and mine()["mining/from_cache"] == 1.0


def test_style_pairs_follow_the_mined_pairs_under_their_own_cache_key(tiny_denoiser):
    tmp, _ = tiny_denoiser

    def pairs(style: int) -> dict:
        data = tiny_pairs_data(tiny_denoiser, "style-pairs", per_class=6, style_pairs_per_class=style)
        data.setup("fit")
        return data.pairs

    plain, styled = pairs(0), pairs(2)
    n = len(plain["y"])
    assert len(styled["y"]) > n and len(list((tmp / "style-pairs").glob("image-pairs-*.pt"))) == 2
    for key in ("chosen", "rejected", "y"):  # the error pairs first, unchanged; the style pairs after them
        assert torch.equal(styled[key][:n], plain[key])


def test_remine_pairs_the_miners_own_samples_from_new_noise(tiny_denoiser):
    """Iterative Diffusion-DPO: ``remine`` replaces the pairs with ones drawn from the miner (the current policy), from
    noise seeded ``seed + round``, judged by the same mining judge."""
    from prefalign.data.diffusion_pairs import mine_image_pairs
    from prefalign.families.denoiser.judge import ensure_judge
    from prefalign.families.denoiser.schedule import NoiseSchedule

    tmp, ref = tiny_denoiser
    data = tiny_pairs_data(tiny_denoiser, "remine-pairs", per_class=6, pairs_per_loser=2)
    data.setup("fit")
    first = {k: v.clone() for k, v in data.pairs.items()}
    torch.manual_seed(5)
    miner = ConditionalUNet(channels=[8, 16], time_dim=32, groups=4)  # not the reference: other samples, other pairs
    miner_path = save_weights(miner, tmp / "miner.pt")
    data.remine(str(miner_path))
    assert len(list((tmp / "remine-pairs").glob("image-pairs-*.pt"))) == 2  # one cache per (miner, noise)

    judge = ensure_judge("lenet", 1, data, str(tmp / "judges"), 0.8)
    schedule = NoiseSchedule(**load_weights(ref)["meta"]["noise_schedule"])
    expected = mine_image_pairs(
        miner.eval(),
        schedule,
        judge,
        num_classes=10,
        guidance=1.0,
        seed=1,
        device=torch.device("cpu"),
        per_class=6,
        steps=2,
        accept_above=0.1,
        reject_below=0.1,
        pairs_per_loser=2,
    )
    assert len(expected["y"]) > 0
    for key in ("chosen", "rejected", "y"):
        torch.testing.assert_close(data.pairs[key], expected[key])
    assert len(first["y"]) != len(expected["y"]) or not torch.equal(first["chosen"], expected["chosen"])


def test_the_rounds_miners_are_checkpoint_state_that_a_resumed_fit_replays(tiny_denoiser):
    """A fit resumed after a re-mining round trains on that round's pairs (same miner, same ``seed + round`` noise), not
    on the reference's; other stages (the held-out ``test --ckpt_path``) need no pairs and mine nothing; a missing
    miner is one clear error."""
    from types import SimpleNamespace

    from prefalign.checkpoint import CheckpointError

    tmp, _ = tiny_denoiser

    def fitting(data, fn="fit"):  # what the data module reads of its Trainer
        data.trainer = SimpleNamespace(
            state=SimpleNamespace(fn=fn),
            global_rank=0,
            precision="32-true",
            strategy=SimpleNamespace(barrier=lambda name: None, root_device=torch.device("cpu")),
        )
        data.setup("fit")
        return data

    data = tiny_pairs_data(tiny_denoiser, "resume-pairs", per_class=6, pairs_per_loser=2)
    data.setup("fit")
    torch.manual_seed(5)
    miner_path = str(save_weights(ConditionalUNet(channels=[8, 16], time_dim=32, groups=4), tmp / "resume-miner.pt"))
    data.remine(miner_path)
    assert data.state_dict() == {"miners": [miner_path]}

    resumed = fitting(tiny_pairs_data(tiny_denoiser, "resume-pairs", per_class=6, pairs_per_loser=2))
    reference_pairs = {k: v.clone() for k, v in resumed.pairs.items()}
    resumed.load_state_dict(data.state_dict())
    assert resumed.miners == [miner_path]
    for key in ("chosen", "rejected", "y"):
        torch.testing.assert_close(resumed.pairs[key], data.pairs[key])
    assert len(list((tmp / "resume-pairs").glob("image-pairs-*.pt"))) == 2  # read from the cache, not mined again

    tested = fitting(tiny_pairs_data(tiny_denoiser, "resume-pairs", per_class=6, pairs_per_loser=2), fn="test")
    tested.load_state_dict(data.state_dict())
    assert tested.miners == [] and torch.equal(tested.pairs["chosen"], reference_pairs["chosen"])

    gone = fitting(tiny_pairs_data(tiny_denoiser, "resume-pairs", per_class=6, pairs_per_loser=2))
    with pytest.raises(CheckpointError, match="missing.*miners/ folder"):
        gone.load_state_dict({"miners": [str(tmp / "no-such-miner.pt")]})


def test_iterative_mining_in_a_step_bounded_diffusion_run(tiny_denoiser):
    """max_epochs=-1 (runs bounded by max_steps, as the diffusion recipes are) still re-mines, at most max_rounds times.
    The recipe's own IterativeMining (the last callback) is the one these arguments set."""
    tmp, ref = tiny_denoiser
    main(
        [
            *tiny_dpo_args(tmp, ref, tmp / "iter-pairs"),
            "--trainer.max_steps=30",
            "--trainer.check_val_every_n_epoch=100",
            "--trainer.callbacks.every_n_epochs=1",
            "--trainer.callbacks.max_rounds=2",
            "--trainer.logger.init_args.name=iterative",
            "--test_after_fit=false",
        ]
    )
    run = next((tmp / "runs" / "iterative").glob("version_*"))
    assert sorted(p.name for p in (run / "miners").iterdir()) == ["epoch1.pt", "epoch2.pt"]
    assert len(list((tmp / "iter-pairs").glob("image-pairs-*.pt"))) == 3  # the reference's pairs + two rounds
    assert "mining/pairs_round" in (run / "metrics.csv").read_text()

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["DiffusionPreferenceDataModule"]["miners"] == [
        str(run / "miners" / f"epoch{e}.pt") for e in (1, 2)
    ]
    # Resumed, the run goes on with its second round's pairs and has no round left: max_rounds counts across resumes.
    main(
        [
            *tiny_dpo_args(tmp, ref, tmp / "iter-pairs"),
            "--trainer.max_steps=60",
            "--trainer.check_val_every_n_epoch=100",
            "--trainer.callbacks.every_n_epochs=1",
            "--trainer.callbacks.max_rounds=2",
            "--trainer.logger.init_args.name=iterative",
            "--test_after_fit=false",
            f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        ]
    )
    miners = sorted(p.name for p in (tmp / "runs" / "iterative").glob("version_*/miners/*.pt"))
    assert miners == ["epoch1.pt", "epoch2.pt"]
    assert len(list((tmp / "iter-pairs").glob("image-pairs-*.pt"))) == 3


def test_mine_and_dpo_end_to_end(tiny_denoiser):
    tmp, ref = tiny_denoiser
    main(
        [
            *tiny_dpo_args(tmp, ref, tmp / "pairs"),
            "--trainer.max_steps=3",
            "--trainer.check_val_every_n_epoch=1",
            "--model.optimizer.init_args.lr=0.001",
        ]
    )
    run = next((tmp / "runs" / "diffusion_dpo").glob("version_*"))
    results = json.loads((run / "results_test.json").read_text())
    for key in (
        "test/error_rate",
        "test/reference/error_rate",
        "test/win_rate",
        "test/fid",
        "test/reference/fid",
        "test/diversity",
        "test/eps_mse",
    ):
        assert key in results["metrics"], key
    assert 0.0 <= results["metrics"]["test/win_rate"] <= 1.0
    assert (
        results["metrics"]["test/real/diversity"] > 0
    )  # the real images' own spread: the scale diversity reads against
    assert list((tmp / "pairs").glob("image-pairs-*.pt"))  # mined once, cached
    metrics = (run / "metrics.csv").read_text()
    assert "mining/seconds" in metrics and "mining/from_cache" in metrics and "mining/pairs" in metrics
    policy = load_weights(run / "policy.pt")
    assert policy["meta"]["noise_schedule"]["num_timesteps"] == 100
    reference = load_weights(ref)
    assert any(not torch.equal(policy["state_dict"][k], reference["state_dict"][k]) for k in reference["state_dict"])
    assert list((run / "images").glob("test_samples*.png"))


def test_testing_the_last_checkpoint_scores_the_final_policy(tiny_denoiser):
    """scripts/diffusion_seeds.py scores an alignment run on held-out noise with `test --ckpt_path
    <run>/checkpoints/last.ckpt`: that checkpoint holds the final policy, also when the run stops between two
    validations, and on the fit's own noise the test run reproduces the fit's test numbers."""
    tmp, ref = tiny_denoiser
    fit = [*tiny_dpo_args(tmp, ref, tmp / "pairs"), "--trainer.limit_train_batches=2", "--trainer.max_steps=5"]
    main([*fit, "--trainer.check_val_every_n_epoch=2", "--trainer.logger.init_args.name=last_ckpt"])  # val at step 4
    run = next((tmp / "runs" / "last_ckpt").glob("version_*"))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 5
    policy = load_weights(run / "policy.pt")["state_dict"]
    assert all(torch.equal(checkpoint["state_dict"][f"policy.{k}"], v) for k, v in policy.items())
    main(
        ["test", *fit[1:], f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--trainer.logger.init_args.name=again"]
    )
    tested = json.loads(next((tmp / "runs" / "again").glob("version_*/results_test.json")).read_text())["metrics"]
    fitted = json.loads((run / "results_test.json").read_text())["metrics"]
    assert tested == pytest.approx(fitted, rel=1e-6)


def test_sample_command_is_deterministic_and_writes_a_grid(tiny_denoiser, tmp_path):
    _, ref = tiny_denoiser
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.pt"
        assert main(["sample", f"--ckpt={ref}", "--per_class=2", "--steps=3", "--seed=5", f"--out={out}"]) == 0
        outs.append(torch.load(out, weights_only=True))
        assert out.with_suffix(".png").is_file()
    assert outs[0]["images"].dtype == torch.uint8 and outs[0]["images"].shape == (20, 1, 28, 28)
    assert outs[0]["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.equal(outs[0]["images"], outs[1]["images"])
    main(["sample", f"--ckpt={ref}", "--per_class=2", "--steps=3", "--seed=6", f"--out={tmp_path / 'c.pt'}"])
    assert not torch.equal(outs[0]["images"], torch.load(tmp_path / "c.pt", weights_only=True)["images"])
    guided = tmp_path / "g.pt"
    main(
        ["sample", f"--ckpt={ref}", "--per_class=1", "--steps=2", "--guidance=2.0", "--classes=[3]", f"--out={guided}"]
    )
    assert torch.load(guided, weights_only=True)["labels"].tolist() == [3]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps=0"], "--steps=0 must be ≥ 1"),
        (["--classes=[10]"], "the model knows classes 0..9"),
        (["--guidance=-1"], "guidance"),
    ],
)
def test_sample_command_bad_input(tiny_denoiser, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    _, ref = tiny_denoiser
    assert main(["sample", f"--ckpt={ref}", f"--out={tmp_path / 'x.pt'}", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_sample_command_refuses_a_classifier(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    ckpt = save_weights(LeNet(), tmp_path / "lenet.pt")
    assert main(["sample", f"--ckpt={ckpt}", f"--out={tmp_path / 'x.pt'}"]) == 2
    assert "not a trained denoiser" in capsys.readouterr().err


class NaNUNet(ConditionalUNet):
    """A denoiser whose predictions are NaN: the loss must stop the run with a clear error, not train on."""

    def forward(self, x, t, y):
        return super().forward(x, t, y) * float("nan")


def test_nan_in_the_denoising_loss_stops_with_a_clear_error(tiny_denoiser, tmp_path):
    backbone = '{"class_path": "tests.denoiser.test_diffusion_pipeline.NaNUNet", "init_args": {"channels": [8, 16], "time_dim": 32, "groups": 4}}'
    args = [
        a for a in tiny_args(tiny_denoiser[0]) if not a.startswith("--model.backbone")
    ]  # its judges are trained already
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "diffusion_pretrain.yaml"),
                *args,
                f"--model.backbone={backbone}",
                f"--model.export_path={tmp_path / 'nan.pt'}",
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=2",
                "--trainer.limit_val_batches=0",
                "--test_after_fit=false",
                "--trainer.callbacks=[]",
            ]
        )
