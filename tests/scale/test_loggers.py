"""Logger overlays: W&B (offline without an API key), TensorBoard and CSV get the config, metrics and figures."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from prefalign.cli import main
from tests.conftest import CONFIGS, SEED_DPO_VALIDATING, SYNTHETIC_ARGS

FIGURES = {
    f"{stage}/{kind}_{view}"
    for stage in ("val", "test")
    for kind in ("confusion", "calibration")
    for view in ("clean", "noisy")
}
FIGURES.add("data/mined_pairs")


def _args(tiny_reference, logger: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / "seed_dpo.yaml"),
        "--config",
        str(CONFIGS / f"logger/{logger}.yaml"),
        *SYNTHETIC_ARGS,
        "--data.init_args.strategy=hard_negative",
        "--model.backbone.channels=4",
        f"--model.reference_ckpt={tiny_reference}",
        "--trainer.max_epochs=1",
        SEED_DPO_VALIDATING,  # validation is under test
        "--trainer.log_every_n_steps=2",
    ]


def test_wandb_is_offline_exactly_when_there_is_no_api_key(no_wandb_account, monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    from prefalign.loggers import WandbLogger, wandb_api_key_available

    assert not wandb_api_key_available()
    logger = WandbLogger(save_dir=str(tmp_path / "runs"))
    assert (
        logger.is_offline and logger._wandb_init["mode"] == "offline" and logger._wandb_init["project"] == "prefalign"
    )

    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_api_key_available()
    assert "mode" not in WandbLogger(save_dir=str(tmp_path / "runs"))._wandb_init

    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert not WandbLogger(save_dir=str(tmp_path / "runs")).is_offline
    assert WandbLogger(save_dir=str(tmp_path / "runs"), offline=True)._wandb_init["mode"] == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit WANDB_MODE wins
    assert "mode" not in WandbLogger(save_dir=str(tmp_path / "runs"))._wandb_init


def test_logger_overlays_replace_the_recipe_logger(capsys):
    for name, class_path in (
        ("wandb", "prefalign.loggers.WandbLogger"),
        ("tensorboard", "lightning.pytorch.loggers.TensorBoardLogger"),
        ("csv", "lightning.pytorch.loggers.CSVLogger"),
    ):
        with pytest.raises(SystemExit):
            main(
                [
                    "fit",
                    "--config",
                    str(CONFIGS / "dpo.yaml"),
                    "--config",
                    str(CONFIGS / f"logger/{name}.yaml"),
                    "--print_config",
                ]
            )
        logger = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]
        assert logger["class_path"] == class_path and logger["init_args"]["save_dir"] == "runs"
        assert logger["init_args"]["name"] == "dpo"  # kept from the recipe: the run name (W&B) or folder (CSV/TB)


def test_wandb_offline_run_has_config_metrics_and_figures(in_tmp, tiny_reference, no_wandb_account, caplog):
    wandb = pytest.importorskip("wandb")
    from tests.scale.wandb_records import read_run

    try:
        with caplog.at_level("INFO"):
            main(_args(tiny_reference, "wandb"))
    finally:
        wandb.finish()
    runs = list((in_tmp / "runs/wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected one offline run (no API key)"
    run_id = runs[0].name.rsplit("-", 1)[1]
    assert f"wandb sync {runs[0].relative_to(in_tmp)}" in caplog.text

    # The run folder of this run (not the shared save_dir): config, weights, results, checkpoints.
    folder = in_tmp / "runs/prefalign" / run_id
    assert {"config.yaml", "policy.pt", "results_test.json", "checkpoints"} <= {p.name for p in folder.iterdir()}
    results = json.loads((folder / "results_test.json").read_text())["metrics"]

    # Read back what `wandb sync` would upload. wandb-core may still be writing the last records when finish()
    # returns: wait for the exit record, which comes last.
    deadline = time.monotonic() + 30
    while (run := read_run(runs[0] / f"run-{run_id}.wandb"))["exit_code"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run["exit_code"] == 0
    config = run["config"]
    assert config["model.objective.class_path"] == "prefalign.objectives.DPO"
    assert config["model.backbone.init_args.channels"] == 4 and config["data.init_args.strategy"] == "hard_negative"
    logged = {}
    for row in run["history"]:
        logged.update(row)
    for key in (
        "train/loss",
        "train/rewards/accuracies",
        "mining/pairs",
        "val/acc_noisy",
        "val/reference/acc_noisy",
        "epoch",
    ):
        assert key in logged, key
    for key, value in results.items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key
    # Figures: W&B image entries in the history, each pointing at a PNG in the run's media folder.
    images = {k.rsplit("/", 1)[0] for k in logged if k.endswith("/_type") and logged[k] == "images/separated"}
    assert images == FIGURES
    for key in FIGURES:
        for filename in logged[f"{key}/filenames"]:
            assert (runs[0] / "files" / filename).is_file(), filename
            assert (runs[0] / "files" / filename).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_overlay_gets_metrics_and_figures(in_tmp, tiny_reference):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main(_args(tiny_reference, "tensorboard"))
    folder = in_tmp / "runs/seed_dpo/version_0"
    assert {"config.yaml", "policy.pt", "results_test.json", "hparams.yaml"} <= {p.name for p in folder.iterdir()}
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == FIGURES
    assert {"train/loss", "val/acc_noisy", "test/acc_noisy", "mining/pairs"} <= set(events.Tags()["scalars"])
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["model.objective.class_path"] == "prefalign.objectives.DPO"


# The quickstart's reference recipe, shrunk: its data keys reach the nested run, so it trains on 600 images.
QUICK = [
    "fit",
    "--config",
    "configs/quickstart.yaml",
    *SYNTHETIC_ARGS,
    "--trainer.max_steps=2",
    "--test_after_fit=false",
    "--model.log_figures=false",
    "--trainer.enable_progress_bar=false",
]


def test_nested_reference_run_follows_wandb_false_and_the_logger_override(in_tmp, no_wandb_account, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("PREFALIGN_WANDB")  # W&B on by default, offline (no account): only --wandb false turns it off
    (in_tmp / "configs").symlink_to(CONFIGS)
    assert main([*QUICK, "--wandb=false", "--trainer.logger.init_args.save_dir=logs"]) == 0
    assert (in_tmp / "artifacts/quickstart/reference.pt").is_file()
    # The reference run logged where the user asked, under its own name, and not to W&B.
    assert (in_tmp / "logs/quickstart_reference/version_0/metrics.csv").is_file()
    assert (in_tmp / "logs/quickstart/version_0/config.yaml").is_file()
    assert not (in_tmp / "runs").exists()
    assert not list(in_tmp.rglob("wandb")) and not list(in_tmp.rglob("offline-run-*"))


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "extra,logger",
    [
        (["--trainer.logger=false"], False),
        (["--config", str(CONFIGS / "logger/tensorboard.yaml")], "lightning.pytorch.loggers.TensorBoardLogger"),
        (
            ["--config", str(CONFIGS / "logger/wandb.yaml"), "--trainer.logger.init_args.project=mine"],
            "prefalign.loggers.WandbLogger",
        ),
    ],
)
def test_nested_reference_run_gets_the_users_logger_under_its_own_name(extra, logger, in_tmp, monkeypatch, capsys):
    import prefalign.cli as cli_module

    calls, real_run_cli = [], cli_module.run_cli

    def fake_run_cli(args):  # stands in for training the reference: records the words
        calls.append(args)
        raise _Stop

    monkeypatch.setattr(cli_module, "run_cli", fake_run_cli)
    (in_tmp / "configs").symlink_to(CONFIGS)
    with pytest.raises(_Stop):
        cli_module.PrefAlignCLI(args=[*QUICK, "--model.reference_ckpt=ref.pt", *extra])
    assert "--wandb=false" in calls[0]  # PREFALIGN_WANDB=0 here: the run's own choice, not the default, is passed on
    with pytest.raises(SystemExit):
        real_run_cli([*calls[0], "--print_config"])  # the nested run's config, as it would run
    got = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]
    if logger is False:
        assert got is False
    else:
        assert got["class_path"] == logger and got["init_args"]["name"] == "quickstart_reference"
        assert got["init_args"]["save_dir"] == "runs" and got["init_args"].get("project", "mine") == "mine"
