"""TRL-style rewards for HF rollouts: reward functions with weights, None, extra columns, the metrics; a reward model."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.data.hf import TRLPromptDataModule
from prefalign.families.base import Rollout
from prefalign.families.hf import RewardModel, TRLRewards
from prefalign.models.hf import load_tokenizer
from tests.hf import grpo_rewards
from tests.hf.tiny import STANDARD, conversational_prompts, make_reward_model_dir, prompt_rows, write_jsonl

COMPLETIONS = [" a mat", " the dog ran", " red", " green trees", "", " fish"]  # 3 prompts x k = 2


def rollout_of(tokenizer, completions: list[str], rows: list[int], k: int) -> Rollout:
    """A rollout holding the given completions (each followed by EOS, then padding), as the family makes one."""
    ids = [tokenizer(text=c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in completions]
    width = max(map(len, ids)) + 1
    responses = torch.full((len(ids), width), tokenizer.pad_token_id)
    for i, r in enumerate(ids):
        responses[i, : len(r)] = torch.tensor(r)
    mask = torch.arange(width) < torch.tensor([len(r) for r in ids]).unsqueeze(1)
    b = len(rows)
    return Rollout(
        batch={"row": torch.tensor(rows)},
        responses=responses.view(b, k, -1),
        mask=mask.view(b, k, -1),
        old_logps=torch.zeros(b, k, width),
    )


@pytest.fixture()
def prompts_data(tiny_model, tmp_path):
    data = TRLPromptDataModule(str(write_jsonl(prompt_rows(STANDARD), tmp_path / "prompts.jsonl")))
    data.prepare(load_tokenizer(str(tiny_model)))
    return data


def test_weighted_sum_none_columns_and_trl_metrics(prompts_data, tiny_model):
    grpo_rewards.CALLS.clear()
    reward = TRLRewards([grpo_rewards.char_count, grpo_rewards.mentions_answer], reward_weights=[1.0, 0.5])
    reward.check_config(object(), prompts_data)  # the preflight call: two prompts, empty completions
    assert grpo_rewards.CALLS[-1]["completions"] == ["", ""]
    reward.setup(None, prompts_data)
    tok = prompts_data.tokenizer
    rollout = rollout_of(tok, COMPLETIONS, rows=[0, 4, 2], k=2)
    rewards = reward(rollout)
    call = grpo_rewards.CALLS[-1]
    # TRL's layout: each prompt and column value repeated for its k completions; text decoded without special tokens.
    assert call["prompts"] == ["the cat sat on"] * 2 + ["the dog ran to"] * 2 + ["birds sang in tall"] * 2
    assert call["answer"] == ["a mat"] * 2 + ["the red house"] * 2 + ["green trees"] * 2
    assert [c.strip() for c in call["completions"]] == [c.strip() for c in COMPLETIONS]
    assert call["completion_ids"][0][-1] == tok.eos_token_id and len(call["completion_ids"]) == 6
    lengths = torch.tensor([float(len(c)) for c in call["completions"]])
    mentions = torch.tensor([1.0, math.nan, 1.0, math.nan, 0.0, math.nan])  # None on odd rows
    expected = lengths + 0.5 * torch.nan_to_num(mentions)  # TRL's nansum of the weighted functions
    torch.testing.assert_close(rewards, expected.view(3, 2))
    m = rollout.metrics
    torch.testing.assert_close(m["rewards/char_count/mean"], lengths.mean())
    torch.testing.assert_close(m["rewards/char_count/std"], lengths.std())
    torch.testing.assert_close(m["rewards/mentions_answer/mean"], torch.tensor(2 / 3))  # over the scored rows only
    torch.testing.assert_close(m["reward"], expected.mean())
    torch.testing.assert_close(m["reward_std"], expected.std())
    assert m["frac_reward_zero_std"] == 0


def test_a_completion_no_function_scores_gets_zero_advantage(prompts_data):
    from prefalign.objectives import PPOLite

    reward = TRLRewards([grpo_rewards.mentions_answer])
    reward.setup(None, prompts_data)
    rewards = reward(rollout_of(prompts_data.tokenizer, COMPLETIONS, rows=[0, 4, 2], k=2))
    assert torch.isnan(rewards[:, 1]).all()
    advantages = PPOLite(k=2, reward=reward).advantages(rewards)
    assert (advantages == 0).all()  # one scored completion per group: no spread, no signal; the NaN ones get 0


def test_reward_weights_must_match_the_functions():
    with pytest.raises(ValueError, match="reward_weights has 1 values for 2 reward functions"):
        TRLRewards([grpo_rewards.char_count, grpo_rewards.mentions_answer], reward_weights=[1.0])


def test_a_reward_returning_the_wrong_number_of_values_is_refused_before_training(prompts_data):
    with pytest.raises(ValueError, match="reward function 'one_short' returned 1 values for 2 completions"):
        TRLRewards([grpo_rewards.one_short]).check_config(object(), prompts_data)


@pytest.mark.parametrize("conversational", [False, True])
def test_reward_model_scores_prompt_plus_completion_as_trl(tiny_model, tmp_path, conversational):
    from transformers import AutoModelForSequenceClassification

    folder = make_reward_model_dir(tmp_path / "my_rm")
    rm = RewardModel(str(folder))
    assert rm.__name__ == "my_rm"  # TRL's name: the model id's last component
    tok = load_tokenizer(str(folder))
    if conversational:
        prompts = [r["prompt"] for r in conversational_prompts(STANDARD[:3])]
        completions = [[{"role": "assistant", "content": c}] for c in ("a mat", "the red house", "")]
        texts = [tok.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
        assert texts[0] == "<|user|> the cat sat on</s><|assistant|> a mat</s>"
    else:
        prompts = [r["prompt"] for r in STANDARD[:3]]
        completions = [" a mat", " the red house", ""]
        texts = [p + c for p, c in zip(prompts, completions)]
    scores = rm(prompts=prompts, completions=completions)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1).eval()
    inputs = tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.no_grad():
        expected = model(**inputs).logits[:, 0]
    torch.testing.assert_close(torch.tensor(scores), expected)
    # Padding is not read: each text alone gives its own score.
    with torch.no_grad():
        alone = model(**tok(text=texts[:1], return_tensors="pt", add_special_tokens=False)).logits[0, 0]
    torch.testing.assert_close(torch.tensor(scores[0]), alone, atol=1e-5, rtol=1e-5)


def test_missing_reward_model_directory_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward model not found: .*nope"):
        RewardModel(str(tmp_path / "nope"))
