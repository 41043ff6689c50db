"""The offline GRPO recipe's pieces on tiny synthetic data: held-in prompts as prompt-only data, the lexical reward in
TRL's form, and the whole recipe (base model first) through ``python -m prefalign fit``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from prefalign.cli import main
from prefalign.data.hf import TextPromptsDataModule
from prefalign.data.hf.bpe_training import ensure_bpe_tokenizer
from prefalign.data.text import synthetic_text
from prefalign.data.text.lexicon import lexicon, valid_word_rate
from prefalign.families.hf import ValidWords
from prefalign.families.hf.reward_funcs import ValidWords as ValidWordsClass
from tests.hf.recipe_tiny import TEXT, tiny_grpo_recipe
from tests.hf.test_offline_recipe import read_metrics


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = ensure_bpe_tokenizer(tmp_path_factory.mktemp("tok") / "bpe", lambda: synthetic_text(20_000, 0), 300)
    return AutoTokenizer.from_pretrained(str(folder))


def prompts_module(**kwargs):
    return TextPromptsDataModule(
        **TEXT, num_prompts=10, prompt_length=5, eval_new_tokens=6, eval_prompts=4, batch_size=3, **kwargs
    )


def test_prompts_are_fixed_length_windows_of_the_training_split_served_as_prompt_only_rows(tokenizer):
    data = prompts_module()
    data.prepare(tokenizer)
    ids, train = data.text_data.ids["train"], data.splits["train"]["prompt_ids"]
    assert train.shape == (10, 5)
    windows = ids.unfold(0, 5, 1)
    assert all((windows == p).all(1).any() for p in train)  # each prompt is a window of the encoded training split
    prompts, columns = data.rows([0, 3])
    assert prompts == [tokenizer.decode(train[i]) for i in (0, 3)] and columns == {}
    assert all(p in data.text["train"] for p in prompts)
    batches = list(data.train_dataloader())
    assert [len(b["row"]) for b in batches] == [3, 3, 3, 1]
    assert sorted(torch.cat([b["row"] for b in batches]).tolist()) == list(range(10))
    first = batches[0]
    assert torch.equal(first["prompt_ids"], train[first["row"]]) and bool(first["prompt_mask"].all())
    # Validation is the text's: windows of the validation split and held-out prompts with their real continuations.
    assert set(next(iter(data.val_dataloader()))) == {"tokens"}
    held_out, real = data.evaluation_prompts()
    assert held_out.shape == (4, 5) and real.shape == (4, 6)
    again = prompts_module()
    again.prepare(tokenizer)
    assert torch.equal(again.splits["train"]["prompt_ids"], train)  # the pool is fixed by the seed
    other = prompts_module(seed=7)
    other.prepare(tokenizer)
    assert not torch.equal(other.splits["train"]["prompt_ids"], train)


def test_valid_words_scores_completions_with_the_training_splits_words(tokenizer):
    data = prompts_module()
    data.prepare(tokenizer)
    reward = ValidWords()
    with pytest.raises(ValueError, match="bind_data"):
        reward(prompts=["a"], completions=["b"])
    reward.bind_data(data)
    assert reward.words == lexicon(data.text["train"])
    texts = [" the king and queen of", " zzq qqx the king of", " the the the the the the", "", " king"]
    scores = reward(prompts=[""] * len(texts), completions=texts, completion_ids=[[]] * len(texts))
    assert scores == pytest.approx([valid_word_rate(t, reward.words) for t in texts])
    assert scores[0] == 1.0 and 0 < scores[1] < 1 and scores[2] == 0.0 and scores[3] == 0.0
    chat = reward(prompts=[[]], completions=[[{"role": "assistant", "content": texts[1]}]])
    assert chat == [scores[1]]
    with pytest.raises(ValueError, match="TextPromptsDataModule"):
        reward.bind_data(object())


def test_grpo_recipe_trains_the_missing_base_first_then_raises_the_lexical_reward(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    score = ValidWordsClass.__call__

    def recorded(self, prompts, completions, **kwargs):
        out = score(self, prompts, completions, **kwargs)
        calls.append((self.words, completions, out))
        return out

    monkeypatch.setattr(ValidWordsClass, "__call__", recorded)
    grpo = tiny_grpo_recipe(tmp_path)
    assert main(["fit", "--config", str(grpo), "--model.optimizer.init_args.lr=0.01"]) == 0
    assert (tmp_path / "base" / "config.json").is_file()
    run = tmp_path / "runs" / "hf_shakespeare_grpo" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    reward = saved["model"]["objective"]["init_args"]["reward"]["init_args"]["reward_funcs"]
    assert [f["class_path"] for f in reward] == ["prefalign.families.hf.ValidWords"]
    # The rollouts' rewards are the valid-word rates of the decoded completions, against the training split's words.
    words = lexicon(synthetic_text(TEXT["synthetic_chars"], 0)[: int(0.9 * TEXT["synthetic_chars"])])
    rollouts = [c for c in calls if len(c[1]) == 2 * 4]  # one batch: 2 prompts x k=4 (the preflight call has 2)
    assert len(rollouts) == 3  # 6 prompts, 2 per step
    for bound, completions, out in rollouts:
        assert bound == words
        assert out == pytest.approx([valid_word_rate(c, words) for c in completions])
    m = read_metrics(run)
    for key in (
        "train/reward",
        "train/rewards/valid_words/mean",
        "train/kl",
        "train/completions/mean_length",
        "val/loss",
        "val/reference/loss",
        "val/valid_words",
        "val/reference/valid_words",
        "val/real/valid_words",
    ):
        assert key in m, key
    assert m["train/reward"] == pytest.approx(m["train/rewards/valid_words/mean"])
    assert m["train/completions/mean_length"] == 6  # no stop token in plain text: every completion is 6 tokens
    base = read_metrics(tmp_path / "runs" / "hf_shakespeare_pretrain" / "version_0")
    assert m["val/reference/loss"] == pytest.approx(base["val/loss"], rel=1e-5)
    results = json.loads((run / "results_test.json").read_text())["metrics"]
    assert {"test/loss", "test/reference/loss", "test/valid_words", "test/real/valid_words"} <= set(results)
    assert (run / "policy" / "config.json").is_file()


def test_bad_data_setting_is_refused_before_the_base_model_is_trained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFALIGN_DEBUG", raising=False)
    grpo = tiny_grpo_recipe(tmp_path)
    assert main(["fit", "--config", str(grpo), "--data.init_args.num_prompts=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_prompts" in err[0]
    assert not (tmp_path / "base").exists() and not (tmp_path / "runs").exists()
