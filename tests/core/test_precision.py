"""bf16 on a CPU without bf16 kernels runs as fp32 (with a warning and the saved config saying so), unless told not to."""

from __future__ import annotations

import shutil

import pytest

import prefalign.precision as precision
from prefalign.cli import PrefAlignCLI
from tests.conftest import CONFIGS, SYNTHETIC_ARGS


@pytest.fixture
def no_bf16_kernels(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: False)


@pytest.fixture
def bf16_kernels(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: True)


@pytest.mark.parametrize("asked", ["bf16-mixed", "bf16-true", "bf16"])
def test_bf16_without_kernels_falls_back_to_fp32_and_says_how_to_keep_it(no_bf16_kernels, asked):
    ran, warning = precision.resolve_precision(asked, "cpu", fallback=True)
    assert ran == "32-true"
    assert f"precision={asked}" in warning and "no bf16 kernels" in warning and "--bf16_fallback=false" in warning


def test_bf16_without_kernels_is_kept_when_fallback_is_off(no_bf16_kernels):
    ran, warning = precision.resolve_precision("bf16-mixed", "cpu", fallback=False)
    assert ran == "bf16-mixed" and "Keeping bf16-mixed" in warning


@pytest.mark.parametrize("asked", ["32-true", "16-true", 32, "64-true", None])
def test_other_precisions_are_never_touched(no_bf16_kernels, asked):
    assert precision.resolve_precision(asked, "cpu", fallback=True) == (asked, None)


@pytest.mark.parametrize("asked", ["16-mixed", "16", 16])
def test_fp16_mixed_on_a_cpu_is_named_as_what_runs(asked, monkeypatch):
    # Lightning runs 16-mixed on a CPU as bf16-mixed; then the bf16 rule applies.
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: True)
    ran, warning = precision.resolve_precision(asked, "cpu", fallback=True)
    assert ran == "bf16-mixed" and f"precision={asked} asked for" in warning and "Running bf16-mixed" in warning
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: False)
    ran, warning = precision.resolve_precision(asked, "cpu", fallback=True)
    assert ran == "32-true" and "runs it as bf16-mixed" in warning and "Running 32-true" in warning
    assert precision.resolve_precision(asked, "cpu", fallback=False)[0] == "bf16-mixed"
    assert precision.resolve_precision(asked, "cuda", fallback=True) == (asked, None)


def test_bf16_with_kernels_or_off_the_cpu_is_kept(bf16_kernels, monkeypatch):
    assert precision.resolve_precision("bf16-mixed", "cpu", fallback=True) == ("bf16-mixed", None)
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: False)
    assert precision.resolve_precision("bf16-mixed", "gpu", fallback=True) == ("bf16-mixed", None)
    assert precision.resolve_precision("bf16-mixed", "cuda", fallback=True) == ("bf16-mixed", None)


def test_runs_on_cpu_reads_the_accelerator_setting(monkeypatch):
    from lightning.pytorch.accelerators import CPUAccelerator

    assert precision.runs_on_cpu("cpu") and precision.runs_on_cpu(CPUAccelerator())
    assert not precision.runs_on_cpu("gpu") and not precision.runs_on_cpu("mps")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert not precision.runs_on_cpu("auto")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    assert precision.runs_on_cpu("auto") and precision.runs_on_cpu(None)


def test_kernel_check_agrees_with_the_dispatched_vector_width():
    import torch

    # oneDNN has bf16 kernels on every AVX512 CPU (native or emulated) and on none with AVX2 at most.
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "DEFAULT", "NO AVX"):
        assert not precision.cpu_has_bf16_kernels()
    elif capability.startswith("AVX512"):
        assert precision.cpu_has_bf16_kernels()


FAST = ["--trainer.fast_dev_run=true", "--test_after_fit=false", "--model.log_figures=false", "--wandb=false"]


def _cli(*extra: str) -> PrefAlignCLI:
    return PrefAlignCLI(
        args=[
            "fit",
            "--config",
            str(CONFIGS / "sft.yaml"),
            *SYNTHETIC_ARGS,
            *FAST,
            "--model.export_path=null",
            "--model.backbone.channels=4",
            "--trainer.accelerator=cpu",
            *extra,
        ]
    )


def test_cli_runs_a_bf16_recipe_as_fp32_without_kernels_and_the_config_records_it(in_tmp, no_bf16_kernels):
    with pytest.warns(UserWarning, match="no bf16 kernels.*Running 32-true"):
        cli = _cli("--trainer.precision=bf16-mixed")
    assert cli.trainer.precision == "32-true"
    assert cli.config["fit"]["trainer"]["precision"] == "32-true"  # what config.yaml saves


def test_cli_keeps_bf16_when_asked_or_when_the_cpu_has_kernels(in_tmp, no_bf16_kernels, monkeypatch):
    with pytest.warns(UserWarning, match="Keeping bf16-mixed"):
        cli = _cli("--trainer.precision=bf16-mixed", "--bf16_fallback=false")
    assert cli.trainer.precision == "bf16-mixed"
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: True)
    assert _cli("--trainer.precision=bf16-mixed").trainer.precision == "bf16-mixed"


def test_reference_recipe_gets_the_same_bf16_choice(in_tmp, tiny_reference, monkeypatch):
    import prefalign.cli as cli_module

    calls = []

    def fake_run_cli(args):  # stands in for training the reference: records the words and writes the file
        calls.append(args)
        shutil.copy(tiny_reference, in_tmp / "ref.pt")

    monkeypatch.setattr(cli_module, "run_cli", fake_run_cli)
    PrefAlignCLI(
        args=[
            "fit",
            "--config",
            str(CONFIGS / "seed_dpo.yaml"),
            f"--reference_recipe={CONFIGS / 'sft.yaml'}",
            f"--model.reference_ckpt={in_tmp / 'ref.pt'}",
            "--model.backbone.channels=4",
            *SYNTHETIC_ARGS,
            *FAST,
            "--bf16_fallback=false",
        ]
    )
    assert len(calls) == 1 and "--bf16_fallback=false" in calls[0]


@pytest.mark.parametrize("kernels,ran", [(True, "bf16-mixed"), (False, "32-true")])
def test_cli_records_what_a_16_mixed_request_ran_on_a_cpu(kernels, ran, in_tmp, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: kernels)
    with pytest.warns(UserWarning, match="precision=16-mixed asked for"):
        cli = _cli("--trainer.precision=16-mixed")
    assert cli.trainer.precision == ran
    assert cli.config["fit"]["trainer"]["precision"] == ran  # what config.yaml saves
