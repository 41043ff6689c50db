#!/usr/bin/env python
"""One measurement of ``scripts/bench_hf.py``: prefalign or TRL 1.16's ``DPOTrainer``, in a process of its own.

    python scripts/bench_hf_worker.py SPEC.json RESULT.json

The spec names the contender (``prefalign``, ``trl`` or ``trl_precompute``), the model directory, the jsonl file and the
settings; the result holds the end time of every optimizer step, the first steps' losses, the completion tokens of
every step, the time spent caching the reference's log-probs, and the peak RSS. Timing is taken by a callback inside
the training loop (Lightning's on the prefalign side, a ``TrainerCallback`` on TRL's), so interpreter start, imports,
model loading and tokenization are not in it. Run from a fresh working directory with a fresh ``HF_DATASETS_CACHE``
(the parent does both), so neither side finds the other's or an earlier repeat's cached reference log-probs.
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from pathlib import Path

LOSS_STEPS = 3  # the first steps whose losses are recorded (they must agree between the two sides)


class StepRecord:
    """What both sides record: step end times, losses of the first steps, completion tokens per step."""

    def __init__(self) -> None:
        self.start: float | None = None  # the first step's start
        self.ends: list[float] = []
        self.losses: list[float] = []
        self.tokens: list[int] = []

    def batch(self, completion_mask, loss) -> None:
        # .item() only for the first steps: after them the loop runs without an extra host sync (on the CPU it costs
        # nothing anyway, but a GPU run should not pay for the bookkeeping).
        if len(self.losses) < LOSS_STEPS:
            self.losses.append(float(loss.detach().item()))
        self.tokens.append(int(completion_mask.sum()))

    def as_dict(self) -> dict:
        return {"start": self.start, "ends": self.ends, "losses": self.losses, "tokens": self.tokens}


def _timed(owner, name: str, record: dict, key: str) -> None:
    """Wrap ``owner.name`` so its wall time adds to ``record[key]`` (the reference caching of either side)."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record[key] = record.get(key, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def add_lightning_callback(callback) -> None:
    """The CLI builds the Trainer: append ``callback`` to the callbacks of every Trainer built from now on."""
    import lightning as L

    init = L.Trainer.__init__

    @functools.wraps(init)
    def patched(self, *args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [callback]
        init(self, *args, **kwargs)

    L.Trainer.__init__ = patched


def run_prefalign(spec: dict, record: dict) -> StepRecord:
    """``python -m prefalign fit --config configs/hf_dpo.yaml ...`` in this process, with a step timer injected."""
    from lightning.pytorch.callbacks import Callback

    from prefalign.cli import main
    from prefalign.data.hf import TRLPreferenceDataModule

    steps = StepRecord()

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if steps.start is None:
                steps.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            steps.batch(batch["completion_mask"], loss)
            steps.ends.append(time.perf_counter())

    add_lightning_callback(StepTimer())
    _timed(TRLPreferenceDataModule, "precompute_reference", record, "reference_s")
    args = [
        "fit",
        "--config",
        str(Path(spec["repo"]) / "configs" / "hf_dpo.yaml"),
        "--model_name_or_path",
        spec["model_dir"],
        "--dataset_name",
        spec["data_file"],
        f"--trainer.max_steps={spec['steps']}",
        "--trainer.log_every_n_steps=1",
        "--trainer.precision=32-true",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.callbacks=[]",  # drop the config's ModelCheckpoint: no checkpoint saving, as on TRL's side
        "--trainer.enable_checkpointing=false",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir=runs",
        f"--data.init_args.batch_size={spec['batch_size']}",
        "--model.optimizer=torch.optim.AdamW",
        f"--model.optimizer.init_args.lr={spec['lr']}",
        "--model.optimizer.init_args.weight_decay=0",
        "--wandb=false",  # TRL: report_to none
    ]
    if main(args) != 0:
        raise SystemExit("prefalign fit failed")
    return steps


def run_trl(spec: dict, record: dict) -> StepRecord:
    """TRL 1.16's ``DPOTrainer`` configured as prefalign runs (``tests/hf/test_parity.py``'s ``run_trl``)."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    steps = StepRecord()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if steps.start is None:
                steps.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            steps.ends.append(time.perf_counter())

    class CountingDPOTrainer(DPOTrainer):
        """Records each step's completion tokens and loss (gradient accumulation 1: one call per optimizer step)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            steps.batch(inputs["completion_mask"], out[0] if return_outputs else out)
            return out

    _timed(DPOTrainer, "_precompute_ref_logps", record, "reference_s")
    args = DPOConfig(
        output_dir="trl_out",
        per_device_train_batch_size=spec["batch_size"],
        max_steps=spec["steps"],
        logging_steps=1,
        learning_rate=spec["lr"],
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        beta=0.1,
        loss_type=["sigmoid"],
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        seed=42,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        precompute_ref_log_probs=spec["contender"] == "trl_precompute",
        # prefalign's default; TRL's is True, which recomputes the forward in every backward (slower, less memory)
        gradient_checkpointing=False,
    )
    trainer = CountingDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(spec["model_dir"]),
        args=args,
        train_dataset=load_dataset("json", data_files=spec["data_file"])["train"],
        processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]),
        callbacks=[StepTimer()],
    )
    trainer.train()
    return steps


def read_spec(spec_path: str) -> dict:
    """The measurement's spec, with torch's intra-op threads set from it (both workers start here)."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])  # OMP_NUM_THREADS is set by the parent too, before torch was imported
    return spec


def write_result(record: dict, out_path: str) -> None:
    """``record`` plus this process's peak RSS and thread count, as the parent reads it (both workers end here)."""
    import torch

    record["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    record["threads"] = torch.get_num_threads()
    Path(out_path).write_text(json.dumps(record))


def main(spec_path: str, out_path: str) -> None:
    spec = read_spec(spec_path)
    record: dict = {"reference_s": 0.0}
    steps = (run_prefalign if spec["contender"] == "prefalign" else run_trl)(spec, record)
    record.update(steps.as_dict())
    write_result(record, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
