#!/usr/bin/env python
"""One GRPO measurement of ``scripts/bench_hf.py --method grpo``: prefalign or TRL 1.16's ``GRPOTrainer``.

    python scripts/bench_hf_grpo_worker.py SPEC.json RESULT.json

The spec names the contender (``prefalign`` or ``trl``), the model directory, the prompt file and the settings; the
result holds the start of the first optimizer step and the end of every one, the completions and completion tokens
sampled for each step (counted where each side samples them: prefalign's ``sample_completions``, TRL's
``_generate_and_score_completions``), the mean reward of each step's completions, and the peak RSS. A step is one
generation batch (``transformers``' ``generate``, KV cache) and one optimizer update on it, on both sides; the step
ends are taken by a callback in each training loop (Lightning's, a ``TrainerCallback``), so interpreter start,
imports, model loading and tokenization are not timed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench_hf_worker import add_lightning_callback, read_spec, write_result


class GenerationRecord:
    """Step ends and, per generation batch, its completions, completion tokens and mean reward."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.ends: list[float] = []
        self.completions: list[int] = []
        self.tokens: list[int] = []
        self.rewards: list[float] = []

    def generated(self, completion_mask) -> None:
        self.completions.append(int(completion_mask.shape[0]))
        self.tokens.append(int(completion_mask.sum()))

    def began(self) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def as_dict(self) -> dict:
        return {
            "start": self.start,
            "ends": self.ends,
            "completions": self.completions,
            "tokens": self.tokens,
            "rewards": self.rewards,
        }


def reward_func(target: int):
    """The reward both sides score completions with: prefalign's ``TargetLength`` (TRL's quickstart ``reward_len``,
    ``-abs(target - len(completion))`` in characters), a plain Python callable, named ``target_length``."""
    from prefalign.families.hf import TargetLength

    return TargetLength(target)


def generation_kwargs(spec: dict) -> dict:
    """Extra ``GenerationConfig`` arguments, the same on both sides: ``min_new_tokens`` (EOS cannot be sampled before
    it; equal to ``max_new_tokens``, every completion is exactly that long) when asked for."""
    return {"min_new_tokens": spec["min_new_tokens"]} if spec["min_new_tokens"] else {}


def run_prefalign(spec: dict) -> GenerationRecord:
    """``python -m prefalign fit --config configs/hf_grpo.yaml ...`` in this process, with a step timer injected."""
    from lightning.pytorch.callbacks import Callback

    import prefalign.families.hf.family as family_module
    from prefalign.cli import main
    from prefalign.families.hf import TRLRewards

    steps = GenerationRecord()
    sample = family_module.sample_completions

    def counted(*args, **kwargs):  # the family's sampling: generate, then mask after the stop token
        completions, mask = sample(*args, **kwargs)
        steps.generated(mask)
        return completions, mask

    family_module.sample_completions = counted
    score = TRLRewards.forward

    def scored(self, rollout):  # the weighted reward of every completion, [B, k]; TRL logs its mean as "reward"
        rewards = score(self, rollout)
        steps.rewards.append(float(rewards.nanmean()))
        return rewards

    TRLRewards.forward = scored

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            steps.began()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.ends.append(time.perf_counter())

    add_lightning_callback(StepTimer())
    reward = {
        "reward_funcs": [{"class_path": "prefalign.families.hf.TargetLength", "init_args": {"target": spec["target"]}}]
    }
    args = [
        "fit",
        "--config",
        str(Path(spec["repo"]) / "configs" / "hf_grpo.yaml"),
        "--model_name_or_path",
        spec["model_dir"],
        "--dataset_name",
        spec["data_file"],
        "--wandb=false",  # TRL: report_to none
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
        f"--data.init_args.batch_size={spec['prompts']}",
        "--data.init_args.val_split=null",
        f"--model.family.init_args.max_new_tokens={spec['max_new_tokens']}",
        f"--model.family.init_args.temperature={spec['temperature']}",
        "--model.family.init_args.top_p=1.0",
        "--model.family.init_args.top_k=null",
        f"--model.family.init_args.generation_kwargs={json.dumps(generation_kwargs(spec))}",
        f"--model.objective.init_args.k={spec['k']}",
        "--model.objective.init_args.ppo_epochs=1",
        "--model.objective.init_args.kl_coef=0.0",
        "--model.objective.init_args.loss_type=dapo",
        "--model.objective.init_args.reward.init_args=" + json.dumps(reward),
        "--model.optimizer=torch.optim.AdamW",
        f"--model.optimizer.init_args.lr={spec['lr']}",
        "--model.optimizer.init_args.weight_decay=0",
        "--model.optimizer.init_args.fused=true",  # TRL's default optim adamw_torch_fused
    ]
    if main(args) != 0:
        raise SystemExit("prefalign fit failed")
    return steps


def run_trl(spec: dict) -> GenerationRecord:
    """TRL 1.16's ``GRPOTrainer`` with plain ``transformers`` generation, configured as prefalign runs
    (``tests/hf/test_grpo_parity.py``'s ``run_trl``, with real sampling and AdamW)."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    steps = GenerationRecord()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            steps.began()

        def on_step_end(self, args, state, control, **kwargs):
            steps.ends.append(time.perf_counter())

    class CountingGRPOTrainer(GRPOTrainer):
        """Records each generation batch's completions and tokens, and the mean reward TRL logs for it."""

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            steps.generated(out["completion_mask"])
            steps.rewards.append(float(self._metrics["train"]["reward"][-1]))
            return out

    completions = spec["prompts"] * spec["k"]
    args = GRPOConfig(
        output_dir="trl_out",
        per_device_train_batch_size=completions,  # TRL counts completions: prompts × num_generations
        gradient_accumulation_steps=1,
        steps_per_generation=1,  # one generation batch = one optimizer step
        num_iterations=1,  # one update per generation batch (prefalign's ppo_epochs)
        num_generations=spec["k"],
        max_completion_length=spec["max_new_tokens"],
        temperature=spec["temperature"],
        top_p=1.0,
        top_k=0,
        generation_kwargs=generation_kwargs(spec) or None,
        use_vllm=False,
        beta=0.0,  # TRL's default: no reference model
        loss_type="dapo",
        scale_rewards="group",
        epsilon=0.2,
        mask_truncated_completions=False,
        max_steps=spec["steps"],
        logging_steps=1,
        learning_rate=spec["lr"],
        optim="adamw_torch_fused",
        weight_decay=0.0,
        lr_scheduler_type="constant",  # prefalign's default (TRL's: linear decay)
        max_grad_norm=0.0,  # prefalign's default, no clipping (TRL's: 1.0)
        gradient_checkpointing=False,  # prefalign's default (TRL's: True, a recomputed forward in every backward)
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        seed=42,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        log_completions=False,
    )
    trainer = CountingGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(spec["model_dir"]),
        reward_funcs=[reward_func(spec["target"])],
        args=args,
        train_dataset=load_dataset("json", data_files=spec["data_file"])["train"],
        processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]),
        callbacks=[StepTimer()],
    )
    trainer.train()
    return steps


def main(spec_path: str, out_path: str) -> None:
    spec = read_spec(spec_path)
    steps = (run_prefalign if spec["contender"] == "prefalign" else run_trl)(spec)
    write_result(steps.as_dict(), out_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
