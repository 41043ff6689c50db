"""prefalign against TRL 1.16's DPOTrainer on the same tiny model, data and settings: the first 3 steps agree.

TRL is configured as prefalign runs: constant learning rate (prefalign has no scheduler unless asked), no gradient
clipping (max_grad_norm 0; prefalign clips only with trainer.gradient_clip_val), AdamW with weight decay 0, fp32, and
16 rows in a batch of 16 (every step sees the same rows whatever the sampler's order). The prefalign side is the
command line of issue #24, run in-process.
"""

from __future__ import annotations

import csv
import math

import pytest

from prefalign.cli import main
from tests.conftest import CONFIGS

trl = pytest.importorskip("trl")

KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")
TOLERANCE = {
    "loss": 1e-4,
    "rewards/chosen": 2e-4,
    "rewards/rejected": 2e-4,
    "rewards/margins": 2e-4,
    "logps/chosen": 2e-3,
    "logps/rejected": 2e-3,
}


def run_trl(model_dir, data_file, loss_type, beta, out_dir, ld_alpha=None, batch_size=16, **config):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    args = DPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=batch_size,
        max_steps=3,
        logging_steps=1,
        learning_rate=1e-3,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        beta=beta,
        loss_type=loss_type if isinstance(loss_type, list) else [loss_type],
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=42,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        ld_alpha=ld_alpha,
        **config,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=load_dataset("json", data_files=str(data_file))["train"],
        processing_class=tokenizer,
    )
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry and "rewards/chosen" in entry]


def run_prefalign(model_dir, data_file, objective, save_dir, batch_size=16):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "hf_dpo.yaml"),
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        str(data_file),
        "--trainer.max_steps=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.precision=32-true",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--data.init_args.batch_size={batch_size}",
        "--model.optimizer=torch.optim.AdamW",
        "--model.optimizer.init_args.lr=0.001",
        "--model.optimizer.init_args.weight_decay=0",
        *objective,
    ]
    assert main(args) == 0
    (metrics,) = save_dir.glob("*/version_0/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    return [{k: float(r[f"train/{k}"]) for k in KEYS} for r in rows]


CASES = {
    "dpo_standard": (
        "standard",
        "sigmoid",
        0.1,
        ["--model.objective=prefalign.objectives.DPO", "--model.objective.init_args.beta=0.1"],
    ),
    # The reference run on every step instead of read from the on-disk cache: the same numbers.
    "dpo_standard_recompute": (
        "standard",
        "sigmoid",
        0.1,
        [
            "--model.objective=prefalign.objectives.DPO",
            "--model.objective.init_args.beta=0.1",
            "--model.recompute_reference=true",
        ],
    ),
    # TRL's newer options: loss_type sigmoid_norm, and ld_alpha (LD-DPO) on the sigmoid loss.
    "sigmoid_norm_standard": (
        "standard",
        "sigmoid_norm",
        0.1,
        ["--model.objective=prefalign.objectives.SigmoidNorm", "--model.objective.init_args.beta=0.1"],
    ),
    "ld_alpha_standard": (
        "standard",
        "sigmoid",
        0.1,
        [
            "--model.objective=prefalign.objectives.LDDPO",
            "--model.objective.init_args.beta=0.1",
            "--model.objective.init_args.ld_alpha=0.5",
        ],
    ),
    # 16 different rows in batches of 8: steps 1-2 are epoch 0, step 3 epoch 1; the same numbers only if prefalign draws
    # the rows in TRL's order (accelerate's seedable sampler, seed 42 + epoch).
    "dpo_data_order": (
        "distinct",
        "sigmoid",
        0.1,
        ["--model.objective=prefalign.objectives.DPO", "--model.objective.init_args.beta=0.1"],
    ),
    "ipo_standard": (
        "standard",
        "ipo",
        0.1,
        ["--model.objective=prefalign.objectives.IPO", "--model.objective.init_args.tau=0.1"],
    ),
    "dpo_conversational": (
        "conversational",
        "sigmoid",
        0.1,
        ["--model.objective=prefalign.objectives.DPO", "--model.objective.init_args.beta=0.1"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_three_steps_match_trl(case, tiny_model, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the reference log-prob cache (artifacts/) is written here
    data, loss_type, beta, objective = CASES[case]
    batch_size = 8 if data == "distinct" else 16
    theirs = run_trl(
        tiny_model,
        data_files[data],
        loss_type,
        beta,
        tmp_path / "trl",
        ld_alpha=0.5 if "ld_alpha" in case else None,
        batch_size=batch_size,
    )
    ours = run_prefalign(tiny_model, data_files[data], objective, tmp_path / "prefalign", batch_size=batch_size)
    assert len(theirs) == len(ours) == 3
    cached = list((tmp_path / "artifacts" / "hf_reference").glob("hf-ref-*.pt"))
    assert len(cached) == (0 if "recompute" in case else 1)  # reference log-probs from the disk cache, or on the fly
    worst = {k: max(abs(t[k] - o[k]) for t, o in zip(theirs, ours)) for k in KEYS}
    print(f"{case}: max |TRL - prefalign| over 3 steps: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    for k in KEYS:
        assert worst[k] <= TOLERANCE[k], (k, [t[k] for t in theirs], [o[k] for o in ours])
    if loss_type != "ipo":  # step 0: policy = reference, so every sigmoid loss starts at ln 2
        assert abs(ours[0]["loss"] - math.log(2)) < 1e-6
    assert ours[2]["loss"] != ours[0]["loss"]  # the model trained: steps 2-3 test the optimizer too
