"""The offline recipe's pieces on tiny synthetic data: the locally trained tokenizer, the model built from a config,
the windows data module, mining into TRL rows, and the reference-first path through ``python -m prefalign fit``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from prefalign.cli import main
from prefalign.data.hf import HFTextDataModule, TextPairsDataModule
from prefalign.data.hf.bpe_training import ENDOFTEXT, ensure_bpe_tokenizer
from prefalign.data.hf.formats import detect_format, load_any
from prefalign.data.hf.text_mining import mine_best_of_2
from prefalign.data.text import synthetic_text
from prefalign.data.text.lexicon import lexicon, valid_word_rate
from prefalign.families.hf import HFCausalLMFromConfig
from prefalign.hf_base_first import missing_base_model
from tests.hf.recipe_tiny import TEXT, TINY_LLAMA, tiny_recipes


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return ensure_bpe_tokenizer(tmp_path_factory.mktemp("tok") / "bpe", lambda: synthetic_text(20_000, 0), 300)


@pytest.fixture(scope="module")
def model(tokenizer_dir):
    torch.manual_seed(0)
    return HFCausalLMFromConfig(TINY_LLAMA, str(tokenizer_dir))


def test_tokenizer_is_trained_once_round_trips_text_and_loads_with_autotokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert len(tok) == 300 and tok.eos_token == ENDOFTEXT and tok.pad_token_id == tok.eos_token_id
    text = "Quoth the raven: 'Nevermore!'\n  ~ é"  # byte-level: even characters it never saw round-trip
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok(text + ENDOFTEXT)["input_ids"][-1] == tok.eos_token_id  # TRL appends EOS as text
    assert not [p for p in tokenizer_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    def must_not_train():
        raise AssertionError("trained again")

    assert ensure_bpe_tokenizer(tokenizer_dir, must_not_train, 300) == tokenizer_dir


def test_model_from_config_takes_the_tokenizers_ids_and_saves_a_loadable_directory(model, tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    tok = model.load_tokenizer()
    assert model.config.vocab_size == len(tok) and model.config.eos_token_id == tok.eos_token_id
    out = model.save_pretrained(tmp_path / "saved")
    loaded = AutoModelForCausalLM.from_pretrained(str(out))
    ids = torch.randint(0, len(tok), (2, 5))
    assert torch.equal(loaded(input_ids=ids).logits, model.eval()(ids))
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # written through a renamed temporary folder
    with pytest.raises(FileNotFoundError, match="tokenizer_text"):
        HFCausalLMFromConfig(TINY_LLAMA, str(tmp_path / "no-tokenizer"))


def test_windows_module_gives_token_windows_of_the_split_in_the_models_tokens(model):
    data = HFTextDataModule(
        **TEXT, block_size=16, batch_size=4, steps_per_epoch=3, prompt_length=4, eval_prompts=5, eval_new_tokens=6
    )
    data.prepare(model.load_tokenizer())
    batches = list(data.train_dataloader())
    assert len(batches) == 3 and batches[0]["tokens"].shape == (4, 17)
    decode = data.tokenizer.decode
    assert all(decode(w) in data.text["train"] for w in batches[0]["tokens"])  # windows of the training split
    val = next(iter(data.val_dataloader()))["tokens"]
    assert decode(val[0]) in data.text["val"]
    prompts, real = data.evaluation_prompts()
    assert prompts.shape == (5, 4) and real.shape == (5, 6)


def test_mining_writes_trl_standard_rows_chosen_has_more_words_and_reuses_the_file(model, tmp_path, monkeypatch):
    data = TextPairsDataModule(**TEXT, num_prompts=24, prompt_length=4, response_length=8, cache_dir=str(tmp_path))
    path = data.mine_pairs(model)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows and detect_format(list(load_any(str(path))["train"].column_names)) == "paired"
    words = lexicon(data.text["train"])
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"} and all(isinstance(v, str) for v in row.values())
        assert valid_word_rate(row["chosen"], words) > valid_word_rate(row["rejected"], words)
    stats = json.loads(path.with_name(path.name + ".stats.json").read_text())
    assert stats["mining/pairs"] == len(rows) and stats["mining/pool_size"] == 24
    data.prepare(model.load_tokenizer())  # the ordinary TRL path on the mined file
    assert len(data.pairs["chosen_ids"]) == len(rows) and data.mining_stats["mining/pairs"] == len(rows)

    def must_not_mine(*args, **kwargs):
        raise AssertionError("mined again")

    monkeypatch.setattr("prefalign.data.hf.text_pairs.mine_best_of_2", must_not_mine)
    again = TextPairsDataModule(**TEXT, num_prompts=24, prompt_length=4, response_length=8, cache_dir=str(tmp_path))
    assert again.mine_pairs(model) == path


def test_mining_drops_ties():
    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join("good" if i == 1 else "zzq" for i in ids) + " "

    class Fixed(torch.nn.Module):  # a "model" whose two samples per prompt are fixed ids
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"eos_token_id": 0})()

        def generate(self, prompts, num_return_sequences, max_new_tokens, **kwargs):
            both = torch.tensor([[1, 1, 1, 1], [2, 2, 1, 2], [1, 1, 1, 1], [1, 1, 1, 1]])  # a winner, then a tie
            return torch.cat([prompts.repeat_interleave(2, 0), both[: 2 * len(prompts)]], 1)

    rows, stats = mine_best_of_2(Fixed(), Tok(), torch.zeros(2, 3, dtype=torch.long), 4, frozenset({"good"}))
    assert len(rows) == 1 and stats["mining/pairs"] == 1 and stats["mining/pool_size"] == 2
    assert "zzq" not in rows[0]["chosen"] and "zzq" in rows[0]["rejected"]


def test_only_a_missing_local_model_is_trained_first(tmp_path):
    from jsonargparse import Namespace

    def cfg(name, recipe="r.yaml"):
        return Namespace(
            reference_recipe=recipe, model=Namespace(backbone=Namespace(init_args=Namespace(model_name_or_path=name)))
        )

    assert missing_base_model(cfg("artifacts/reference/x")) == "artifacts/reference/x"
    assert missing_base_model(cfg(str(tmp_path / "m"))) == str(tmp_path / "m")
    assert missing_base_model(cfg("HuggingFaceTB/SmolLM2-135M-Instruct")) is None  # a hub name: never trained
    assert missing_base_model(cfg("artifacts/reference/x", None)) is None
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert missing_base_model(cfg(str(tmp_path / "m"))) is None


def read_metrics(run: Path) -> dict[str, float]:
    last: dict[str, float] = {}
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            last.update({k: float(v) for k, v in row.items() if v})
    return last


def test_recipe_trains_the_missing_base_first_then_mines_and_aligns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pretrain, dpo = tiny_recipes(tmp_path)
    assert main(["fit", "--config", str(dpo)]) == 0
    assert (tmp_path / "base" / "config.json").is_file() and (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    assert len(list((tmp_path / "cache").glob("hf-text-pairs-*.jsonl"))) == 1
    base = read_metrics(tmp_path / "runs" / "hf_shakespeare_pretrain" / "version_0")
    assert {"val/loss", "val/valid_words", "val/real/valid_words"} <= set(base)
    run = tmp_path / "runs" / "hf_shakespeare_dpo" / "version_0"
    m = read_metrics(run)
    for key in (
        "val/loss",
        "val/reference/loss",
        "val/valid_words",
        "val/reference/valid_words",
        "mining/pairs",
        "train/rewards/margins",
    ):
        assert key in m, key
    # The reference's loss and samples are the pretrained model's own: what pretraining's last validation measured.
    assert m["val/reference/loss"] == pytest.approx(base["val/loss"], rel=1e-5)
    assert m["val/reference/valid_words"] == pytest.approx(base["val/valid_words"])
    assert (run / "policy" / "config.json").is_file()
    # Run again: the base model and the pairs are reused (nothing trained first, nothing mined).
    assert main(["fit", "--config", str(dpo)]) == 0
    assert not (tmp_path / "runs" / "hf_shakespeare_pretrain" / "version_1").exists()


def test_bad_data_setting_is_refused_before_the_base_model_is_trained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFALIGN_DEBUG")
    _, dpo = tiny_recipes(tmp_path)
    assert main(["fit", "--config", str(dpo), "--data.init_args.num_prompts=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_prompts" in err[0]
    assert (
        not (tmp_path / "base").exists() and not (tmp_path / "tokenizer").exists() and not (tmp_path / "runs").exists()
    )
