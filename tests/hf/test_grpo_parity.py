"""prefalign's GRPO against TRL 1.16's GRPOTrainer on the tiny Llama, for the same fixed completions.

Sampling is the one random step, so both sides get the same completions: TRL through its ``rollout_func`` hook,
prefalign by replacing ``sample_completions`` in the family (everything after it is the real code: decoding, reward
functions and a reward model with weights and a ``None``, group advantages (TRL's ``+1e-4``), the k3 KL to the
reference times the ratio (TRL's ``use_bias_correction_kl``), the tempered log-probs, the dapo loss and the update). Both run 3 steps on 2 prompts x 4 completions with SGD (an Adam step is
about lr x sign(gradient), which would hide a gradient difference), a constant learning rate and no clipping. The
rewards and the loss agree at every step; the KL at steps 2 and 3 measures the policy after 1 and 2 updates against
the reference, so its agreement checks the gradients.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from prefalign.cli import main
from prefalign.families.hf.rollout import mask_after_stop
from tests.conftest import CONFIGS
from tests.hf import grpo_rewards
from tests.hf.tiny import make_reward_model_dir, write_jsonl

trl = pytest.importorskip("trl")

PROMPTS = [{"prompt": "the cat sat on", "answer": "a mat"}, {"prompt": "birds sang in", "answer": "tall trees"}]
K, MAX_NEW, EOS, PAD = 4, 6, 2, 3
# Completion ids per prompt and sample: ending in EOS, or MAX_NEW tokens without it (truncated).
COMPLETIONS = [
    [[40, 41, EOS], [50, 51, 52, 53, 54, 55], [60, EOS], [70, 71, 72, 73, EOS]],
    [[30, 31, 32, 33, 34, 35], [44, EOS], [45, 46, 47, EOS], [90, 91, 92, 93, 94, 95]],
]
KEYS = (
    "loss",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "completions/mean_length",
    "completions/clipped_ratio",
    "completions/mean_terminated_length",
    "clip_ratio/region_mean",
)
FUNCS = ("tiny_rm", "char_count", "mentions_answer")
WEIGHTS = [0.5, 1.0, 0.5]
TEMPERATURE, LR, BETA = 0.7, 0.5, 0.1


def which_prompt(tokenizer, ids: list[int]) -> int:
    return [tokenizer(text=p["prompt"])["input_ids"] for p in PROMPTS].index(ids)


def run_trl(model_dir, rm_dir, data_file, out_dir, iterations):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def rollout_func(prompts, trainer):
        prompt_ids = tokenizer(text=prompts)["input_ids"]
        # TRL's batch: each prompt's K copies in a row; the j-th copy gets completion j.
        completions = [COMPLETIONS[which_prompt(tokenizer, p)][i % K] for i, p in enumerate(prompt_ids)]
        return {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None}

    args = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=len(PROMPTS) * K,
        num_generations=K,
        max_completion_length=MAX_NEW,
        temperature=TEMPERATURE,
        beta=BETA,
        loss_type="dapo",
        reward_weights=WEIGHTS,
        max_steps=3 * iterations,
        num_iterations=iterations,
        logging_steps=1,
        learning_rate=LR,
        optim="sgd",
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=42,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=[str(rm_dir), grpo_rewards.char_count, grpo_rewards.mentions_answer],
        args=args,
        train_dataset=load_dataset("json", data_files=str(data_file))["train"],
        processing_class=tokenizer,
        rollout_func=rollout_func,
    )
    trainer.train()
    return [e for e in trainer.state.log_history if "loss" in e and "kl" in e]


def fixed_completions(model, prompt_ids, prompt_mask, generation_config, stop_ids, pad_id):
    """prefalign's side of the fixed completions: the rows' prompts found from their ids, completion j of each group."""
    tokenizer = model.load_tokenizer()
    rows = [
        COMPLETIONS[which_prompt(tokenizer, ids[m.bool()].tolist())][i % K]
        for i, (ids, m) in enumerate(zip(prompt_ids, prompt_mask))
    ]
    out = torch.full((len(rows), max(map(len, rows))), pad_id)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out, mask_after_stop(out, stop_ids) & (out != pad_id)


def run_prefalign(model_dir, rm_dir, data_file, save_dir, monkeypatch, iterations):
    monkeypatch.setattr("prefalign.families.hf.family.sample_completions", fixed_completions)
    funcs = [
        {"class_path": "prefalign.families.hf.RewardModel", "init_args": {"model_name_or_path": str(rm_dir)}},
        "tests.hf.grpo_rewards.char_count",
        "tests.hf.grpo_rewards.mentions_answer",
    ]
    args = [
        "fit",
        "--config",
        str(CONFIGS / "hf_grpo.yaml"),
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        str(data_file),
        "--wandb=false",
        f"--trainer.max_steps={3 * iterations}",  # an optimizer step per pass: 3 batches
        f"--model.objective.init_args.ppo_epochs={iterations}",
        "--trainer.log_every_n_steps=1",
        "--trainer.limit_val_batches=0",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--data.init_args.batch_size={len(PROMPTS)}",
        f"--model.family.init_args.max_new_tokens={MAX_NEW}",
        f"--model.family.init_args.temperature={TEMPERATURE}",
        f"--model.objective.init_args.k={K}",
        f"--model.objective.init_args.kl_coef={BETA}",
        "--model.objective.init_args.reward.init_args="
        + json.dumps({"reward_funcs": funcs, "reward_weights": WEIGHTS}),
        "--model.optimizer=torch.optim.SGD",
        f"--model.optimizer.init_args.lr={LR}",
    ]
    assert main(args) == 0
    (metrics,) = save_dir.glob("*/version_0/metrics.csv")
    return [r for r in csv.DictReader(metrics.open()) if r.get("train/loss")]


REWARD_KEYS = [k for k in KEYS if not k.startswith(("loss", "kl", "clip_ratio"))] + [
    f"rewards/{f}/{s}" for f in FUNCS for s in ("mean", "std")
]


@pytest.mark.parametrize("iterations", [1, 2])
def test_grpo_matches_trl_for_fixed_completions(tiny_model, tmp_path, monkeypatch, iterations):
    """``iterations`` 2 (TRL's ``num_iterations``, prefalign's ``ppo_epochs``): each rollout is used for two updates,
    the second with old log-probs from before the first, so ratios leave 1 and get clipped. TRL logs each update,
    prefalign each batch (after its last update): prefalign's row i is TRL's row 2i + 1 for the loss, the KL and the
    clip ratios, and TRL's row 2i (the rollout's) for the rewards and lengths."""
    monkeypatch.chdir(tmp_path)
    rm_dir = make_reward_model_dir(tmp_path / "tiny_rm")
    data = write_jsonl(PROMPTS, tmp_path / "prompts.jsonl")
    ours = run_prefalign(tiny_model, rm_dir, data, tmp_path / "runs", monkeypatch, iterations)
    theirs = run_trl(tiny_model, rm_dir, data, tmp_path / "trl", iterations)
    assert len(ours) == 3 and len(theirs) == 3 * iterations
    for step, a in enumerate(ours):
        last, first = theirs[iterations * step + iterations - 1], theirs[iterations * step]
        for key in KEYS:
            want = float((first if key in REWARD_KEYS else last)[key])
            got = float(a[f"train/{key}"])
            assert got == pytest.approx(want, rel=1e-4, abs=1e-6), (step, key, got, want)
        for key in REWARD_KEYS:
            assert float(a[f"train/{key}"]) == pytest.approx(float(first[key]), rel=1e-4, abs=1e-6), (step, key)
    assert float(ours[-1]["train/kl"]) > 1e-4  # the updates moved the policy
    if iterations == 2:
        assert any(float(r["train/clip_ratio/region_mean"]) > 0 for r in ours)  # the second passes clipped some tokens
