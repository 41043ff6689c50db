"""``python -m prefalign``: LightningCLI with prefalign's defaults, plus the extra subcommands of :mod:`prefalign.commands`.

Subcommands: fit / validate / test / predict (Lightning's) and the registered extras (``dream``, ...).
``fit`` tests the final policy afterwards (``--test_after_fit false`` to skip) and, when the reference
checkpoint is missing and ``--reference_recipe`` names a config, trains the reference first.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from jsonargparse import namespace_to_dict
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from prefalign import preflight
from prefalign.callbacks.save_config import LoggedSaveConfigCallback
from prefalign.checkpoint import CheckpointError, SafeCheckpointIO, atomic_save, check_lightning_checkpoint
from prefalign.cli_help import CLASS_OPTIONS_HELP, DESCRIPTION, SUBCOMMAND_HELP, RawFormatter
from prefalign.cli_parser import OneLineErrorParser
from prefalign.commands import EXTRA_COMMANDS, PROG, debug_requested, extra_command, run_guarded
from prefalign.core.module import AlignmentModule
from prefalign.hf_base_first import check_before_training, missing_base_model
from prefalign.loggers import WandbLogger, run_dir
from prefalign.models.loading import check_architecture
from prefalign.models.lora import LoRA
from prefalign.nested_runs import reference_recipe_args, reseed
from prefalign.precision import resolve_precision
from prefalign.process_tuning import tune_process
from prefalign.resume import checkpoint_dirs, find_last_checkpoint
from prefalign.run_results import write_results


class PrefAlignCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", OneLineErrorParser)
        kwargs.setdefault(
            "parser_kwargs", {"prog": PROG, "description": DESCRIPTION, "formatter_class": RawFormatter()}
        )
        super().__init__(
            AlignmentModule,
            L.LightningDataModule,  # any data module: each model family brings its own
            *args,
            subclass_mode_data=True,
            save_config_callback=LoggedSaveConfigCallback,
            auto_configure_optimizers=False,
            **kwargs,
        )

    def _add_subcommands(self, parser, **kwargs: Any) -> None:
        # Full-sentence descriptions, the class-options pointer in each --help, and the extra subcommands listed beside
        # Lightning's (main() runs those before this parser sees them: here they are only listed).
        for name, help_ in SUBCOMMAND_HELP.items():
            sub = kwargs.setdefault(name, {})
            sub.setdefault("description", f"{help_}\n\n{CLASS_OPTIONS_HELP}")
            sub.setdefault("usage", f"{PROG} {name} [--config RECIPE] [options]")  # not one line per option
            sub.setdefault("formatter_class", RawFormatter())
        super()._add_subcommands(parser, **kwargs)
        subcommands = parser._subcommands_action
        for action in subcommands._choices_actions:
            action.help = SUBCOMMAND_HELP.get(action.dest, action.help)
        from jsonargparse import ArgumentParser

        for name, (_, help_) in EXTRA_COMMANDS.items():
            text = f"{help_[0].upper()}{help_[1:]} ({PROG} {name} --help)"
            subcommands.add_subcommand(name, ArgumentParser(prog=f"{PROG} {name}", description=text), help=text)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--reference_recipe",
            type=str | None,
            default=None,
            help="Config that trains the reference when model.reference_ckpt is missing (e.g. configs/sft.yaml), or a "
            "Hugging Face run's local model directory (model.backbone.init_args.model_name_or_path).",
        )
        parser.add_argument(
            "--reference_recipe_args",
            type=list[str],
            default=[],
            help="Extra command-line words for the reference_recipe's run (last, so they win).",
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="fit: test the final policy when training ends."
        )
        parser.add_argument(
            "--wandb",
            type=bool,
            default=os.environ.get("PREFALIGN_WANDB", "1").lower() not in ("0", "false", "no"),
            help="Also log to Weights & Biases when the config's logger is the plain CSV logger (online with an API key, "
            "offline otherwise; $WANDB_MODE wins). false (or PREFALIGN_WANDB=0): CSV only.",
        )
        parser.add_argument(
            "--bf16_fallback",
            type=bool,
            default=True,
            help="Run a bf16 precision as 32-true on a CPU without bf16 kernels (AVX2 only), where bf16 is 9-17x slower "
            "than fp32; the saved config records what ran. false keeps bf16 there.",
        )

        # TRL's names for the two things a Hugging Face run always sets (prefalign.models.HFCausalLM and
        # prefalign.data.hf.TRLPreferenceDataModule); parse_arguments maps them onto those classes' arguments.
        parser.add_argument(
            "--model_name_or_path",
            type=str | None,
            default=None,
            help="Hugging Face runs: the model (hub name or save_pretrained directory); sets model.backbone.init_args.model_name_or_path.",
        )
        parser.add_argument(
            "--dataset_name",
            type=str | None,
            default=None,
            help="Hugging Face runs: the preference data (hub name or json/jsonl/parquet file); sets data.init_args.dataset_name.",
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, hf_shortcuts(args) if args is not None else args)

    def before_instantiate_classes(self) -> None:
        if self.subcommand in EXTRA_COMMANDS:  # e.g. `-c x.yaml generate`: only main() dispatches these
            raise ValueError(f"{self.subcommand} takes its own options, first: {PROG} {self.subcommand} --help.")
        # Before the trainer exists and before config.yaml is saved, so the run folder records the precision that ran.
        trainer = self.config[self.subcommand].trainer
        precision, warning = resolve_precision(trainer.precision, trainer.accelerator, self._sub("bf16_fallback", True))
        if warning:
            rank_zero_warn(warning)
            trainer.precision = precision
        if self.subcommand in ("fit", "validate", "test", "predict"):
            self._ensure_base_model()

    def _ensure_base_model(self) -> None:
        """A Hugging Face recipe whose local model directory is missing trains it first with its reference_recipe
        (:mod:`prefalign.hf_base_first`), before the model is loaded."""
        cfg = self.config[self.subcommand]
        folder = missing_base_model(cfg)
        if folder is None:
            return
        data_keys = check_before_training(cfg, folder)
        Path(folder).expanduser().parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(folder).expanduser()) + ".lock"):
            if missing_base_model(cfg) is None:
                return  # another run trained it while this one waited
            rank_zero_info(f"Model {folder} is missing: training it first with {cfg.reference_recipe}.")
            run_cli(reference_recipe_args(cfg.reference_recipe, folder, cfg, data_keys))
            reseed(cfg)
        if missing_base_model(cfg) is not None:
            raise CheckpointError(
                f"the reference recipe {cfg.reference_recipe} finished but did not write {folder}; check its model.export_path."
            )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would read --ckpt_path's hyper_parameters into the config (prefalign saves none, so a file's would
        # choose classes to build). Check the file instead: pickled code, a weights file or hyperparameters are refused.
        path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if path and Path(path).is_file():
            check_lightning_checkpoint(path)

    def instantiate_trainer(self, **kwargs: Any):
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        # Atomic checkpoint writes and weights_only loads for every run, beside any plugins the config names.
        plugins = config.get("plugins") or []
        kwargs["plugins"] = (list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]) + [SafeCheckpointIO()]
        progress_bar = config.get("enable_progress_bar")
        if progress_bar is None:
            # Progress bars for people at a terminal; one line per epoch in CI, logs and batch jobs.
            kwargs["enable_progress_bar"] = progress_bar = sys.stderr.isatty()
        if not progress_bar and not config.get("fast_dev_run"):
            from prefalign.callbacks.progress import EpochProgress

            callbacks = config.get("callbacks") or []
            kwargs["callbacks"] = (list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]) + [
                EpochProgress()
            ]
        logger = config.get("logger")
        if self._sub("wandb", True) and type(logger) is CSVLogger:
            # W&B beside the recipe's CSV logger, same run name; the CSV logger stays first, so its folder is the
            # run folder (config.yaml, policy.pt, results_*.json) and scripts read metrics.csv as before.
            kwargs["logger"] = [logger, WandbLogger(name=logger.name, save_dir=logger.save_dir, version=None)]
        return super().instantiate_trainer(**kwargs)

    # ------------------------------------------------------------------ hooks
    def _sub(self, key: str, default: Any = None) -> Any:
        return self.config[self.subcommand].get(key, default)

    def before_fit(self) -> None:
        self._before_run()
        self._fit_started = time.monotonic()

    def _before_run(self) -> None:
        """fit/validate/test: everything that can refuse the run comes before the reference is trained or data mined."""
        self._resolve_last_checkpoint()
        self._check_paths()
        self.model.family.check_config(self.model.policy, self.datamodule)
        self.model.family.check_objective(self.model.objective, self.datamodule)
        reward = getattr(self.model.objective, "reward", None)
        if hasattr(reward, "check_config"):  # PPO-lite's reward: refused before any work, like the family
            reward.check_config(self.model.policy, self.datamodule)
        self._ensure_reference()

    before_validate = before_test = _before_run

    def before_predict(self) -> None:
        self._check_paths()
        self._ensure_reference()  # a missing, unsafe or mismatched reference is refused before the run folder is made

    def _check_paths(self) -> None:
        """Every path this run writes (reference, exported weights, caches, run folder) must be writable: checked
        before any work, so a bad one stops the run with one line naming the setting, and nothing written."""
        reference = self.model.reference_ckpt
        trains_reference = (
            self.subcommand != "predict"
            and reference is not None
            and self._sub("reference_recipe") is not None
            and not Path(reference).is_file()
        )
        preflight.check_file("--model.reference_ckpt", reference, will_write=trains_reference)
        export = getattr(self.model, "export_path", None)
        if hasattr(self.model.policy, "save_pretrained"):  # a directory (save_pretrained), replaced atomically
            preflight.check_folder("--model.export_path", Path(export).parent if export else None)
        else:
            preflight.check_file("--model.export_path", export)
        for key in ("cache_dir", "judge_dir"):
            preflight.check_folder(f"--data.init_args.{key}", getattr(self.datamodule, key, None))
        preflight.check_folder("--model.family.init_args.judge_dir", getattr(self.model.family, "judge_dir", None))
        for logger in self.trainer.loggers:
            preflight.check_folder("--trainer.logger.init_args.save_dir", getattr(logger, "save_dir", None))
        preflight.check_folder("--trainer.default_root_dir", self.trainer.default_root_dir)

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the newest checkpoint of *any* earlier run of this experiment, or a refusal.

        Lightning looks for ``last.ckpt`` only in the new run's own folder (``version_<n+1>``), which is empty,
        so on its own ``last`` would silently start from scratch."""
        cfg = self.config_init[self.subcommand]
        if cfg.get("ckpt_path") != "last":
            return
        path, is_last = find_last_checkpoint(self.trainer)
        if path is None:
            fresh = (
                " Drop --ckpt_path to train from scratch." if self.subcommand == "fit" else " Pass a checkpoint file."
            )
            raise CheckpointError(
                f"--ckpt_path last: nothing to resume, no checkpoint of an earlier run under "
                f"{', '.join(checkpoint_dirs(self.trainer))}.{fresh}"
            )
        why = "" if is_last else " (no last.ckpt: the newest checkpoint of the run)"
        rank_zero_info(f"--ckpt_path last: resuming from {path}{why}")
        cfg["ckpt_path"] = str(path)

    def _ensure_reference(self) -> None:
        path = self.model.reference_ckpt
        recipe = self._sub("reference_recipe")
        if path is None or Path(path).is_file() or recipe is None:
            if path is not None:  # missing, corrupt, unsafe or another architecture: say so before any work
                policy = self.model.policy
                check_architecture(
                    policy.model if isinstance(policy, LoRA) else policy, path
                )  # a LoRA's file is its base's
            return
        with FileLock(str(path) + ".lock"):
            if Path(path).is_file():
                return
            rank_zero_info(f"Reference checkpoint {path} is missing: training it first with {recipe}.")
            cfg = self.config[self.subcommand]
            args = reference_recipe_args(recipe, path, cfg, getattr(type(self.datamodule), "reference_data_keys", ()))
            # The reference must have the policy's architecture and family.
            for key in ("backbone", "family"):
                value = cfg.model.get(key)
                if value is not None:
                    value = namespace_to_dict(value)
                    if key == "backbone" and isinstance(self.model.policy, LoRA):
                        value = value["init_args"]["base"]  # a LoRA policy's reference is its base, trained in full
                    args.append(f"--model.{key}=" + json.dumps(value))
            run_cli(args)
            reseed(cfg)
        if not Path(path).is_file():
            raise CheckpointError(
                f"the reference recipe {recipe} finished but did not write {path}; check its model.export_path."
            )

    def after_fit(self) -> None:
        # Wall time of fit() alone (data setup, training, validation; not the final test), for results_test.json.
        self._fit_seconds = time.monotonic() - getattr(self, "_fit_started", time.monotonic())
        if self._sub("test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            self._report("test")

    def after_validate(self) -> None:
        self._report("val")

    def after_test(self) -> None:
        self._report("test")

    def after_predict(self) -> None:
        predictions = self.trainer.predict_loop.predictions
        path = run_dir(self.trainer) / "predictions.pt"  # a broadcast under DDP: every rank asks
        if not predictions or not self.trainer.is_global_zero:
            return
        merged = {k: torch.cat([p[k].cpu() for p in predictions]) for k in predictions[0]}
        atomic_save(merged, path)
        print(f"prefalign: wrote {self.model.family.predict_summary(merged)} to {path}")

    def _report(self, stage: str) -> None:
        write_results(self.trainer, self.model, stage, getattr(self, "_fit_seconds", None))


HF_SHORTCUTS = {
    "--model_name_or_path": "--model.backbone.init_args.model_name_or_path",
    "--dataset_name": "--data.init_args.dataset_name",
}


def hf_shortcuts(args: list[str] | dict) -> list[str] | dict:
    """``--model_name_or_path X`` / ``--dataset_name Y`` (TRL's names) also set the HF backbone's and data module's
    arguments, at the place they were given (so they override the config file given before them)."""
    if not isinstance(args, list):
        return args
    out: list[str] = []
    words = iter(args)
    for word in words:
        flag, eq, value = word.partition("=")
        if flag in HF_SHORTCUTS:
            value = value if eq else next(words, "")
            out += [f"{flag}={value}", f"{HF_SHORTCUTS[flag]}={value}"]
        else:
            out.append(word)
    return out


_RUN_DEPTH = [0]  # run_cli calls in progress: the reference recipe runs inside the run that needs it


def run_cli(args: list[str] | None) -> PrefAlignCLI:
    # main() always passes the words it parsed (with --debug removed), also when they came from sys.argv.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    preflight.check_config_files(list(args or []))
    _RUN_DEPTH[0] += 1
    try:
        return PrefAlignCLI(args=args)
    finally:
        _RUN_DEPTH[0] -= 1
        # One W&B run per CLI run: Lightning's logger leaves it open (for notebooks), and an open run would be
        # silently reused by the next run in this process (the reference recipe's, a test's).
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish()
        if _RUN_DEPTH[0] == 0 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Close the process group while the interpreter is whole: left to Lightning's atexit hook, gloo's threads
            # sometimes die after Python has begun finalising, and the launcher aborts ("terminate called without an
            # active exception") after a run that succeeded.
            torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to ``sys.argv[1:]`` (tests pass a list). Returns the exit code.

    Bad input (a config value out of range, a missing or corrupt checkpoint, unavailable data) is reported as one
    line, ``prefalign: error: ...``, with exit code 2; ``--debug`` or ``PREFALIGN_DEBUG=1`` lets the traceback through.
    """
    tune_process()
    words = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(words)
    words = [w for w in words if w != "--debug"]
    extra = words[0] if words and words[0] in EXTRA_COMMANDS else None
    # argparse names a program after sys.argv[0] ("__main__.py" under -m) unless told otherwise, as the extra
    # subcommands' parsers and jsonargparse's `--data.help CLASS` are: name it as it was typed. Only for those: a DDP
    # run started as a script relaunches itself with sys.argv[0].
    argv0 = sys.argv[:1]
    if extra or any(w in ("-h", "--help") or w.split("=", 1)[0].endswith(".help") for w in words):
        sys.argv[:1] = [f"{PROG} {extra}" if extra else PROG]
    try:
        if extra:
            return run_guarded(lambda: extra_command(extra)(words[1:]), debug)
        return run_guarded(lambda: run_cli(words) and 0, debug)
    finally:
        sys.argv[:1] = argv0
