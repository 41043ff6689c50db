import json

import pytest
import torch
import yaml

from prefalign.cli import main
from tests.conftest import CONFIGS, SYNTHETIC_ARGS

FAST = [
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.log_figures=false",
]


def _help(capsys, *words: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*words, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_subcommand_with_a_sentence_and_examples(capsys):
    from prefalign.cli import SUBCOMMAND_HELP
    from prefalign.commands import EXTRA_COMMANDS

    out = _help(capsys)
    flat = " ".join(out.split())
    assert out.startswith("usage: python -m prefalign") and "__main__" not in out
    assert "{fit,validate,test,predict,dream,generate,sample}" in flat
    for sentence in SUBCOMMAND_HELP.values():
        assert sentence in flat and sentence.endswith(".")
    for name, (_, help_) in EXTRA_COMMANDS.items():
        assert f"{help_[0].upper()}{help_[1:]} (python -m prefalign {name} --help)" in flat
    assert "configs/dpo.yaml" in out and "configs/quickstart.yaml" in out


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_subcommand_help_is_short_and_says_where_the_class_options_are(subcommand, capsys):
    from prefalign.cli import SUBCOMMAND_HELP

    out = _help(capsys, subcommand)
    assert (
        out.startswith(f"usage: python -m prefalign {subcommand} [--config RECIPE] [options]") and "__main__" not in out
    )
    assert SUBCOMMAND_HELP[subcommand] in out
    assert "--data.help CLASS" in out and "--data.help prefalign.data.PreferenceDataModule" in out
    assert "known subclasses" not in out  # for --model.backbone alone, every torch module: 700 lines
    assert len(out.splitlines()) < 330, len(out.splitlines())  # ~320 today; the class listing alone was 700


def test_class_help_and_extra_subcommand_help_name_the_program(capsys):
    out = _help(capsys, "fit", "--data.help", "prefalign.data.PreferenceDataModule")
    assert out.startswith("usage: python -m prefalign") and "--data.cache_dir" in out
    for name in ("generate", "sample", "dream"):
        out = _help(capsys, name)
        assert out.startswith(f"usage: python -m prefalign {name}")
        description = " ".join(out.split("\n\n")[1].split())  # the paragraph after the usage lines
        assert description.endswith("."), f"{name}: {description!r} stops mid-sentence"
        if name != "dream":
            assert "--device DEVICE       where the model runs" in out


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_print_config_resolves_every_recipe(config, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["objective"]["class_path"].startswith("prefalign.objectives.")
    assert cfg["data"]["class_path"].startswith("prefalign.data.")


def test_seed_config_is_the_seed_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "seed_dpo.yaml"), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["objective"] == {
        "class_path": "prefalign.objectives.DPO",
        "init_args": {"beta": 0.1, "label_smoothing": 0.0},
    }
    assert cfg["model"]["optimizer"]["init_args"]["lr"] == 0.001 and cfg["trainer"]["max_epochs"] == 5
    assert cfg["data"]["init_args"]["strategy"] == "mistakes" and cfg["data"]["init_args"]["batch_size"] == 64
    assert cfg["data"]["init_args"]["corruption"]["init_args"] == {"factor": 0.5, "seed": 0}


def test_fast_dev_run_fit_through_main(in_tmp, capsys):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "sft.yaml"),
            *SYNTHETIC_ARGS,
            *FAST,
            "--trainer.fast_dev_run=true",
            "--model.backbone.channels=4",
            "--model.export_path=null",
        ]
    )
    assert "test results (SFT)" in capsys.readouterr().out


def test_alignment_run_trains_missing_reference_first_then_aligns_and_tests(in_tmp, capsys):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "seed_dpo.yaml"),
        f"--reference_recipe={CONFIGS / 'sft.yaml'}",
        "--model.backbone=prefalign.models.SeedCNN",
        "--model.backbone.channels=4",
        *SYNTHETIC_ARGS,
        *FAST,
    ]
    main(args)
    out = capsys.readouterr().out
    ref = in_tmp / "artifacts/reference/seed_cnn.pt"
    assert ref.is_file()
    payload = torch.load(ref, weights_only=True)
    assert payload["init_args"]["channels"] == 4  # the recipe used the alignment run's backbone
    assert "test results (DPO)" in out and "reference" in out
    # seed_dpo.yaml's reference_recipe_args reached the reference run: it trained without validating.
    reference_config = yaml.safe_load((in_tmp / "runs/sft/version_0/config.yaml").read_text())
    assert reference_config["trainer"]["limit_val_batches"] == 0
    assert not list((in_tmp / "runs/sft/version_0/images").glob("val_*"))
    results = json.loads((in_tmp / "runs/seed_dpo/version_0/results_test.json").read_text())
    assert {"test/acc_noisy", "test/reference/acc_noisy", "test/kl_ref_noisy"} <= set(results["metrics"])
    assert (in_tmp / "runs/seed_dpo/version_0/config.yaml").is_file()
    assert (in_tmp / "runs/seed_dpo/version_0/policy.pt").is_file()
    # The saved config reproduces the run: test the saved checkpoint with it.
    main(
        [
            "test",
            "--config",
            str(in_tmp / "runs/seed_dpo/version_0/config.yaml"),
            "--ckpt_path",
            str(in_tmp / "runs/seed_dpo/version_0/checkpoints/last.ckpt"),
        ]
    )
    again = json.loads((in_tmp / "runs/seed_dpo/version_1/results_test.json").read_text())
    assert again["metrics"]["test/acc_noisy"] == pytest.approx(results["metrics"]["test/acc_noisy"])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model.no_such_key=1"], "no_such_key"),
        (["--trainer.max_epochs=two"], "max_epochs"),
        (["--model.objective=prefalign.objectives.NotAnObjective"], "NotAnObjective"),
    ],
)
def test_bad_config_fails_before_writing_anything(in_tmp, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(CONFIGS / "sft.yaml"), *SYNTHETIC_ARGS, *extra])
    assert e.value.code != 0
    assert message in capsys.readouterr().err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "artifacts").exists()


def test_trainer_gets_safe_checkpoint_io_and_no_progress_bar_off_a_terminal(in_tmp):
    from prefalign.checkpoint import SafeCheckpointIO
    from prefalign.cli import run_cli

    base = [
        "fit",
        "--config",
        str(CONFIGS / "sft.yaml"),
        *SYNTHETIC_ARGS,
        "--trainer.fast_dev_run=true",
        "--model.export_path=null",
        "--test_after_fit=false",
        "--model.log_figures=false",
        "--model.backbone.channels=4",
    ]
    cli = run_cli(base)
    assert isinstance(cli.trainer.strategy.checkpoint_io, SafeCheckpointIO)
    assert cli.trainer.progress_bar_callback is None  # pytest's stderr is not a terminal
    cli = run_cli([*base, "--trainer.enable_progress_bar=true"])
    assert cli.trainer.progress_bar_callback is not None  # an explicit choice wins


def test_validate_and_predict_subcommands_on_a_saved_run(in_tmp, capsys, tiny_reference):
    base = [
        "--config",
        str(CONFIGS / "seed_dpo.yaml"),
        f"--model.reference_ckpt={tiny_reference}",
        "--model.backbone=prefalign.models.SeedCNN",
        "--model.backbone.channels=4",
        *SYNTHETIC_ARGS,
    ]
    main(["fit", *base, *FAST, "--test_after_fit=false"])
    ckpt = in_tmp / "runs/seed_dpo/version_0/checkpoints/last.ckpt"
    main(["validate", *base, f"--ckpt_path={ckpt}"])
    assert "prefalign val results (DPO)" in capsys.readouterr().out
    main(["predict", *base, f"--ckpt_path={ckpt}"])
    out = capsys.readouterr().out
    assert "wrote 200 predictions" in out
    predictions = torch.load(next(in_tmp.glob("runs/seed_dpo/version_*/predictions.pt")), weights_only=True)
    assert set(predictions) == {"y", "pred_clean", "pred_noisy", "confidence_clean", "confidence_noisy"}
    assert len(predictions["y"]) == 200


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_writes_last_ckpt_for_ckpt_path_last(config, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"] or []
    saves_last = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint") and c["init_args"]["save_last"]]
    assert saves_last, (
        f"{config}: no ModelCheckpoint with save_last: true, so --ckpt_path last has no last.ckpt to resume"
    )


def test_an_extra_subcommand_after_lightning_options_is_refused_with_the_way_to_call_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert main(["-c", str(tmp_path / "empty.yaml"), "generate"]) == 2
    assert (
        "prefalign: error: generate takes its own options, first: python -m prefalign generate --help."
        in capsys.readouterr().err
    )


def test_reference_recipe_args_come_last_so_they_win():
    from jsonargparse import Namespace

    from prefalign.nested_runs import reference_recipe_args

    cfg = Namespace(
        data=Namespace(init_args=Namespace(source="synthetic")),
        trainer=Namespace(logger=False),
        seed_everything=3,
        reference_recipe_args=["--trainer.limit_val_batches=0", "--seed_everything=7"],
    )
    args = reference_recipe_args("configs/sft.yaml", "ref.pt", cfg, ("source",))
    assert args[-2:] == ["--trainer.limit_val_batches=0", "--seed_everything=7"]
    assert "--seed_everything=3" in args and "--data.init_args.source=synthetic" in args
    del cfg.reference_recipe_args  # a config without the key (runs saved before it existed)
    assert reference_recipe_args("configs/sft.yaml", "ref.pt", cfg, ())[-1] == "--trainer.logger=false"
