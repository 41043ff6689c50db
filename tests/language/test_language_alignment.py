"""Aligning the language model: the rewards, the mined pairs, and SFT → DPO → PPO-lite through the CLI on synthetic text."""

import json

import pytest
import torch
from torch import nn

from prefalign.cli import main
from prefalign.data.text import CharTokenizer
from prefalign.data.text.lexicon import complete_words, distinct_2, lexicon, valid_word_rate
from prefalign.data.text.preference import mine_text_pairs
from prefalign.families.base import Rollout
from prefalign.families.language.rewards import NegativeLength
from prefalign.objectives import PPOLite
from tests.conftest import CONFIGS

WORDS = lexicon("To be, or not to be: that is the question.")


def test_lexical_validity_by_hand():
    assert WORDS == {"to", "be", "or", "not", "that", "is", "the", "question"}
    # "o" is cut by the start, "qu" by the end: judged are "be", "or", "not", "xyz", "is"
    assert complete_words("o be or not xyz is qu") == ["be", "or", "not", "xyz", "is"]
    assert valid_word_rate("o be or not xyz is qu", WORDS) == pytest.approx(4 / 5)
    assert valid_word_rate("ab", WORDS) == 0.0  # no complete word
    # "the the the the the": distinct-2 = 1/4 < 0.5 -> zero, though every word is real
    assert distinct_2(["the"] * 5) == pytest.approx(0.25)
    assert valid_word_rate(" the the the the the ", WORDS) == 0.0
    assert valid_word_rate(" the the the the the ", WORDS, min_distinct_2=0.0) == 1.0


def test_seed_reward_is_a_constant_and_reinforce_uses_it_raw():
    batch = {"prompt": torch.zeros(3, 5, dtype=torch.long)}
    rollout = Rollout(
        batch=batch,
        responses=torch.randint(3, (3, 1, 20)),
        mask=torch.ones(3, 1, 20, dtype=torch.bool),
        old_logps=torch.zeros(3, 1, 20),
    )
    rewards = NegativeLength()(rollout)
    assert rewards.tolist() == [[-25.0]] * 3
    assert (
        PPOLite(k=1, baseline="none", kl_coef=0.0, reward=NegativeLength()).advantages(rewards).tolist()
        == [[-25.0]] * 3
    )
    with pytest.raises(ValueError, match="k=1 is out of range"):
        PPOLite(k=1)  # a group of one has no baseline


class Parrot(nn.Module):
    """Always predicts the character after the current one (cyclically) with certainty: samples are deterministic."""

    block_size = 16

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, ids):
        return torch.nn.functional.one_hot((ids + 1) % self.n, self.n).float() * 50


def test_mined_pairs_best_of_2_and_spin():
    tok = CharTokenizer(" abet")
    prompts = torch.stack([tok.encode("t"), tok.encode("a")])
    real = torch.stack([tok.encode(" be "), tok.encode(" a b")])
    words = frozenset({"be", "bet"})
    spin = mine_text_pairs(Parrot(5), prompts, real, "spin", tok, words)
    assert torch.equal(spin["chosen"], real) and tok.decode(spin["rejected"][0]) == " abe"  # t -> ' ' -> a -> b -> e
    # a deterministic reference: both samples identical, every pair ties and is dropped
    best = mine_text_pairs(Parrot(5), prompts, real, "best_of_2", tok, words)
    assert len(best["prompt"]) == 0 and int(best["pool"]) == 2


def test_sft_then_dpo_then_ppo_through_the_cli(in_tmp):
    tiny = [
        "--data.init_args.source=synthetic",
        "--data.init_args.synthetic_chars=20000",
        "--data.init_args.block_size=32",
        "--model.backbone.init_args.block_size=32",
        "--model.backbone.init_args.d_model=32",
        "--model.backbone.init_args.d_ff=64",
        "--data.init_args.max_val_windows=40",
        "--trainer.max_epochs=1",
    ]
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "lm_pretrain.yaml"),
            *tiny,
            "--data.init_args.steps_per_epoch=40",
            "--model.export_path=artifacts/ref.pt",
        ]
    )
    aligned = [
        *tiny,
        "--model.reference_ckpt=artifacts/ref.pt",
        "--reference_recipe=null",
        "--data.init_args.eval_prompts=8",
        "--data.init_args.prompt_length=16",
        "--data.init_args.eval_new_tokens=16",
        "--model.family.init_args.max_new_tokens=16",
    ]
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "lm_dpo.yaml"),
            *aligned,
            "--data.init_args.num_prompts=128",
            "--data.init_args.response_length=16",
        ]
    )
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "lm_ppo.yaml"),
            *aligned,
            "--data.init_args.steps_per_epoch=3",
            "--data.init_args.batch_size=4",
            "--trainer.log_every_n_steps=1",
        ]
    )
    for name, keys in (
        (
            "lm_dpo",
            ("test/loss", "test/kl_ref", "test/valid_words", "test/reference/valid_words", "test/real/valid_words"),
        ),
        ("lm_ppo", ("test/loss", "test/kl_ref", "test/valid_words")),
    ):
        metrics = json.loads((in_tmp / f"runs/{name}/version_0/results_test.json").read_text())["metrics"]
        assert all(k in metrics for k in keys), (name, sorted(metrics))
    dpo_log = (in_tmp / "runs/lm_dpo/version_0/metrics.csv").read_text()
    ppo_log = (in_tmp / "runs/lm_ppo/version_0/metrics.csv").read_text()
    assert "mining/pairs" in dpo_log and "ppo/reward_mean" in ppo_log
    assert list((in_tmp / "artifacts/pairs").glob("text-pairs-best_of_2-*.pt"))
