"""Resume: SIGKILL mid-epoch, ``--ckpt_path last``, same result as never stopping; unsafe checkpoints refused."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from prefalign.checkpoint import CheckpointError, SafeCheckpointIO, load_weights
from prefalign.cli import main
from prefalign.data.batches import TensorBatches
from tests.conftest import CONFIGS, SYNTHETIC_ARGS
from tests.scale._run import start_cli, tail

# 500 training images, batch 64: 8 steps per epoch. Checkpoints every 3 steps; the kill comes after step 11
# (epoch 1, batch 3), so the newest checkpoint is step 9: mid-epoch 1, after a validation, with optimizer state.
OVERLAY = """
trainer:
  max_epochs: 2
  log_every_n_steps: 2
  enable_progress_bar: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true, save_top_k: 0, every_n_train_steps: 3}
    - class_path: tests.scale.probes.KillAtStep
      init_args: {step: 11}
"""

RECIPES = {
    # DPO on mined pairs, with a learning-rate schedule; the cached reference log-probs come from the mining cache.
    "dpo": [
        "--config",
        str(CONFIGS / "dpo.yaml"),
        "--data.init_args.mine_on=noisy",
        "--model.lr_scheduler.init_args.T_max=2",
    ],
    # PPO-lite: samples labels from the global RNG on every step, so the RNG state must be restored too.
    "ppo": [
        "--config",
        str(CONFIGS / "ppo.yaml"),
        "--data.init_args.batch_size=64",
        "--model.objective.init_args.ppo_epochs=1",
    ],
}


def _args(recipe: str, overlay, reference) -> list[str]:
    return [
        "fit",
        *RECIPES[recipe],
        "--config",
        str(overlay),
        *SYNTHETIC_ARGS,
        "--model.backbone.channels=4",
        f"--model.reference_ckpt={reference}",
        "--model.log_figures=false",
    ]


@pytest.mark.parametrize("recipe", ["dpo", pytest.param("ppo", marks=pytest.mark.slow)])
def test_sigkill_mid_epoch_then_ckpt_path_last_ends_like_an_uninterrupted_run(
    recipe, tmp_path, tiny_reference, monkeypatch, capsys
):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(OVERLAY)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    killed.mkdir(), straight.mkdir()
    args = _args(recipe, overlay, tiny_reference)

    # The run that dies: a real process SIGKILLed after step 11 (no cleanup, no final checkpoint) ...
    proc = start_cli(args, killed, PREFALIGN_TEST_KILL="1")
    # ... while the uninterrupted run with the same seed trains here, in-process (same code path as the CLI).
    monkeypatch.chdir(straight)
    main(args)
    try:
        code = proc.wait(timeout=240)
    finally:
        proc.kill()
    assert code == -signal.SIGKILL, f"expected the run to be SIGKILLed, exit code {code}:\n{tail(killed)}"
    name = {"dpo": "dpo", "ppo": "ppo"}[recipe]
    first = killed / f"runs/{name}/version_0"
    assert not (first / "policy.pt").exists() and not (first / "results_test.json").exists()
    ckpt = torch.load(first / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 9 and ckpt["epoch"] == 1
    # The data position is in the checkpoint: epoch 1, one batch done.
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_yielded": 1}]
    assert not list((first / "checkpoints").glob(".*.tmp")), "a temporary checkpoint file was left behind"

    # Re-run the same command with --ckpt_path last: it finds version_0's last.ckpt (the new run is version_1).
    monkeypatch.chdir(killed)
    capsys.readouterr()
    main([*args, "--ckpt_path", "last"])
    out = capsys.readouterr().out
    resumed = killed / f"runs/{name}/version_1"
    assert (resumed / "results_test.json").is_file(), out

    expected = json.loads((straight / f"runs/{name}/version_0/results_test.json").read_text())["metrics"]
    got = json.loads((resumed / "results_test.json").read_text())["metrics"]
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    a = load_weights(straight / f"runs/{name}/version_0/policy.pt")
    b = load_weights(resumed / "policy.pt")
    assert a["meta"]["global_step"] == b["meta"]["global_step"] == 16
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=1e-6)


def test_ckpt_path_last_with_nothing_to_resume_stops_before_any_work(in_tmp, capsys, monkeypatch):
    # The quickstart's reference is missing and its recipe is set: the refusal comes before the reference is trained.
    monkeypatch.delenv("PREFALIGN_DEBUG")
    (in_tmp / "configs").symlink_to(CONFIGS)
    assert main(["fit", "--config", "configs/quickstart.yaml", *SYNTHETIC_ARGS, "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err
    assert (
        "prefalign: error: --ckpt_path last: nothing to resume, no checkpoint of an earlier run under runs/quickstart/*/checkpoints. "
        "Drop --ckpt_path to train from scratch." in err
    )
    assert len(err.strip().splitlines()) == 1
    assert {p.name for p in in_tmp.iterdir()} == {"configs"}  # nothing written: no reference, no run folder


def _quickstart(reference, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        *SYNTHETIC_ARGS,
        "--model.backbone.channels=4",
        f"--model.reference_ckpt={reference}",
        "--model.log_figures=false",
        "--test_after_fit=false",
        "--trainer.log_every_n_steps=1",
        "--trainer.max_epochs=20",
        *extra,
    ]  # max_steps ends each run


def _first_logged_step(folder) -> int:
    import csv

    with open(folder / "metrics.csv") as f:
        return min(int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss"))


def test_quickstart_killed_then_ckpt_path_last_resumes_also_without_last_ckpt(in_tmp, tiny_reference, caplog):
    runs = in_tmp / "runs/quickstart"
    # A run stopped after 3 steps (a kill, for --ckpt_path last's purposes) leaves checkpoints/last.ckpt ...
    main(_quickstart(tiny_reference, "--trainer.max_steps=3"))
    assert torch.load(runs / "version_0/checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    # ... which the re-run continues from: its first step is the 4th.
    with caplog.at_level("INFO"):
        main(_quickstart(tiny_reference, "--trainer.max_steps=5", "--ckpt_path", "last"))
    assert "--ckpt_path last: resuming from runs/quickstart/version_0/checkpoints/last.ckpt\n" in caplog.text
    assert _first_logged_step(runs / "version_1") >= 3
    # Runs whose config kept only step-named checkpoints (no save_last): the newest of them is resumed, and said so.
    for folder, step in (("version_0", 3), ("version_1", 5)):
        (runs / folder / "checkpoints/last.ckpt").rename(runs / folder / f"checkpoints/epoch=0-step={step}.ckpt")
    caplog.clear()
    with caplog.at_level("INFO"):
        main(_quickstart(tiny_reference, "--trainer.max_steps=7", "--ckpt_path", "last"))
    assert (
        "--ckpt_path last: resuming from runs/quickstart/version_1/checkpoints/epoch=0-step=5.ckpt (no last.ckpt: the newest checkpoint of the run)"
        in caplog.text
    )
    assert _first_logged_step(runs / "version_2") >= 5


def test_end_of_epoch_loader_state_resumes_at_the_next_epoch():
    data = {"x": torch.arange(10)}
    done = TensorBatches(data, batch_size=4, shuffle=True, seed=3)
    it = iter(done)
    for _ in range(len(done)):  # Lightning stops after len() batches without exhausting the iterator
        next(it)
    state = done.state_dict()
    assert state == {"epoch": 0, "batches_yielded": 3}
    resumed = TensorBatches(data, batch_size=4, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    fresh_epoch1 = TensorBatches(data, batch_size=4, shuffle=True, seed=3)
    fresh_epoch1.epoch = 1
    assert [b["x"].tolist() for b in resumed] == [b["x"].tolist() for b in fresh_epoch1]


class _Payload:
    """Pickles as a call to os.system: loading it with plain pickle would run the command."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_checkpoint_with_pickled_code_is_refused_and_never_runs(subcommand, in_tmp, tiny_reference):
    marker = in_tmp / "payload-ran"
    evil = in_tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "hook": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.ckpt.*pickled objects"):
        main(
            [
                subcommand,
                "--config",
                str(CONFIGS / "seed_dpo.yaml"),
                *SYNTHETIC_ARGS,
                "--model.backbone.channels=4",
                f"--model.reference_ckpt={tiny_reference}",
                "--model.log_figures=false",
                "--ckpt_path",
                str(evil),
                "--debug",
            ]
        )
    assert not marker.exists(), "the pickled payload ran"


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. the job is killed while writing

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_checkpoints_carry_the_rng_state_for_fit():
    """PPO samples labels (and dropout draws masks) from the global RNG: a resumed fit must draw the same numbers."""
    import lightning as L
    from lightning.pytorch.trainer.states import TrainerFn

    from prefalign.core.module import AlignmentModule

    model = AlignmentModule()
    model.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    expected = torch.rand(4)
    torch.rand(100)  # the killed run drew more before dying
    model.trainer.state.fn = TrainerFn.TESTING
    model.on_load_checkpoint(checkpoint)  # testing a checkpoint leaves the RNG alone
    assert not torch.equal(torch.rand(4), expected)
    model.trainer.state.fn = TrainerFn.FITTING
    model.on_load_checkpoint(checkpoint)
    assert torch.equal(torch.rand(4), expected)
    assert checkpoint["prefalign_rng"]["cpu"].dtype == torch.uint8
