"""GRPO through the real CLI on the tiny Llama: a few steps log TRL's metrics; bad input is one line before any work."""

from __future__ import annotations

import csv
import json

import pytest

from prefalign.cli import main
from tests.conftest import CONFIGS
from tests.hf.tiny import STANDARD, conversational_prompts, make_reward_model_dir, prompt_rows, write_jsonl


def fit(model, data, *extra):
    return [
        "fit",
        "--config",
        str(CONFIGS / "hf_grpo.yaml"),
        "--model_name_or_path",
        str(model),
        "--dataset_name",
        str(data),
        "--wandb=false",
        "--trainer.max_steps=3",
        "--model.family.init_args.max_new_tokens=6",
        "--model.objective.init_args.k=4",
        "--data.init_args.batch_size=2",
        *extra,
    ]


def rewards(*funcs, weights=None):
    value = {"reward_funcs": list(funcs)} | ({"reward_weights": weights} if weights else {})
    return "--model.objective.init_args.reward.init_args=" + json.dumps(value)


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    return make_reward_model_dir(tmp_path_factory.mktemp("rm") / "tiny_rm")


def test_grpo_fit_logs_trl_metrics_with_functions_a_reward_model_and_kl(tiny_model, reward_model, in_tmp):
    data = write_jsonl(conversational_prompts(STANDARD) * 2, in_tmp / "prompts.jsonl")
    rm = {"class_path": "prefalign.families.hf.RewardModel", "init_args": {"model_name_or_path": str(reward_model)}}
    args = fit(
        tiny_model,
        data,
        rewards("tests.hf.grpo_rewards.char_count", rm, weights=[1.0, 0.5]),
        "--model.objective.init_args.kl_coef=0.1",
        "--model.objective.init_args.ppo_epochs=2",  # two optimizer steps per batch: max_steps 4 is 2 batches
        "--trainer.max_steps=4",
        "--trainer.log_every_n_steps=1",
        "--trainer.val_check_interval=2",
        "--data.init_args.val_fraction=0.25",
        "--model.optimizer.init_args.lr=0.01",
    )
    assert main(args) == 0
    run = in_tmp / "runs" / "hf_grpo" / "version_0"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    train = [r for r in rows if r.get("train/loss")]
    assert len(train) == 2
    for name in (
        "train/reward",
        "train/reward_std",
        "train/rewards/char_count/mean",
        "train/rewards/tiny_rm/mean",
        "train/rewards/tiny_rm/std",
        "train/frac_reward_zero_std",
        "train/kl",
        "train/completions/mean_length",
        "train/completions/clipped_ratio",
        "train/clip_ratio/region_mean",
    ):
        assert all(r[name] for r in train), name
    first = train[0]
    assert all(float(r["train/kl"]) > 0 for r in train)  # logged after each batch's second update: the policy moved
    weighted = float(first["train/rewards/char_count/mean"]) + 0.5 * float(first["train/rewards/tiny_rm/mean"])
    assert abs(float(first["train/reward"]) - weighted) < 1e-4
    assert 1 <= float(first["train/completions/mean_length"]) <= 6
    val = [r for r in rows if r.get("val/reward")]
    assert val and val[-1]["val/rewards/tiny_rm/mean"] and val[-1]["val/completions/mean_length"]
    assert (run / "policy" / "config.json").is_file()
    saved = (run / "config.yaml").read_text()
    assert "tests.hf.grpo_rewards.char_count" in saved and "prefalign.families.hf.RewardModel" in saved


def _no_prompt(d):
    return write_jsonl([{"question": "q", "answer": "a"}], d / "qa.jsonl")


def _prompts(d):
    return write_jsonl(prompt_rows(STANDARD), d / "prompts.jsonl")


CASES = [
    (
        "missing prompt column",
        lambda d, m: fit(m, _no_prompt(d)),
        "the dataset lacks the column prompt (it has: answer, question); accepted TRL prompt-only formats: "
        "standard {prompt} (text); conversational {prompt: [{role, content}, ...]}",
    ),
    (
        "reward model directory missing",
        lambda d, m: fit(
            m,
            _prompts(d),
            rewards(
                {
                    "class_path": "prefalign.families.hf.RewardModel",
                    "init_args": {"model_name_or_path": str(d / "no_rm")},
                }
            ),
        ),
        "reward model not found: ",
    ),
    (
        "reward returning the wrong number of values",
        lambda d, m: fit(m, _prompts(d), rewards("tests.hf.grpo_rewards.one_short")),
        "reward function 'one_short' returned 1 values for 2 completions: it must return a list with one float",
    ),
    (
        "preference data module",
        lambda d, m: fit(
            m,
            _prompts(d),
            "--data=prefalign.data.hf.TRLPreferenceDataModule",
            f"--data.init_args.dataset_name={write_jsonl(STANDARD, d / 'prefs.jsonl')}",
        ),
        "set data.class_path to prefalign.data.hf.TRLPromptDataModule",
    ),
]


CASES.append(
    (
        "preference objective on prompts",
        lambda d, m: fit(m, _prompts(d), "--model.objective=prefalign.objectives.DPO"),
        "objective DPO trains on the data's responses, and TRLPromptDataModule holds prompts only: set data.class_path to "
        "prefalign.data.hf.TRLPreferenceDataModule",
    )
)


@pytest.mark.parametrize("make_args,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_grpo_input_is_one_line_before_any_work(make_args, message, tiny_model, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    inputs = in_tmp / "inputs"
    inputs.mkdir()
    got = main(make_args(inputs, tiny_model))
    err = capsys.readouterr().err
    assert got == 2, err
    assert message in err, err
    assert "Traceback (most recent" not in err and len(err.strip().splitlines()) == 1, err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "artifacts").exists()


def test_grpo_with_lora_uses_the_adapters_off_model_as_reference(tiny_model, in_tmp):
    data = write_jsonl(prompt_rows(STANDARD), in_tmp / "prompts.jsonl")
    peft = json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    args = fit(
        tiny_model,
        data,
        f"--model.backbone.init_args.peft={peft}",
        "--model.objective.init_args.kl_coef=0.1",
        "--model.optimizer.init_args.lr=0.01",
        "--trainer.log_every_n_steps=1",
    )
    assert main(args) == 0
    run = in_tmp / "runs" / "hf_grpo" / "version_0"
    kl = [float(r["train/kl"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss")]
    assert kl[0] == 0 and kl[-1] > 0  # the adapters start at zero: the policy is the reference until it trains
    assert (run / "policy" / "adapter_config.json").is_file()
