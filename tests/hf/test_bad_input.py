"""Bad input to a Hugging Face run (issue #24, item 8): one line naming the problem, exit code 2, nothing written."""

from __future__ import annotations

import json
import sys

import pytest

from prefalign.cli import main
from tests.conftest import CONFIGS
from tests.hf.tiny import STANDARD, make_model_dir, write_jsonl


def fit(model, data, *extra):
    return [
        "fit",
        "--config",
        str(CONFIGS / "hf_dpo.yaml"),
        "--model_name_or_path",
        str(model),
        "--dataset_name",
        str(data),
        "--trainer.max_steps=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("no_template"), chat_template=False)


def _wrong_columns(d):
    return write_jsonl([{"question": "q", "answer": "a"}], d / "qa.jsonl")


def _long_prompt(d):
    return write_jsonl([STANDARD[0]], d / "one.jsonl")  # "the cat sat on": 4 tokens


CASES = [
    ("model not found", lambda d, m, files, nt: fit(d / "no_such_model", files["standard"]), "model not found: "),
    (
        "conversational data, no chat template",
        lambda d, m, files, nt: fit(nt, files["conversational"]),
        "is conversational (lists of {role, content} messages) but the model's tokenizer has no chat template",
    ),
    (
        "missing columns",
        lambda d, m, files, nt: fit(m, _wrong_columns(d)),
        "lacks the column(s) prompt, chosen, rejected (it has: answer, question); accepted TRL formats: standard {prompt, chosen, rejected}",
    ),
    (
        "empty after truncation",
        lambda d, m, files, nt: fit(m, _long_prompt(d), "--data.init_args.max_length=3"),
        "is empty after truncation: all 1 prompts are at least max_length=3 tokens long",
    ),
    (
        "max_length shorter than any sequence",
        lambda d, m, files, nt: fit(m, files["standard"], "--data.init_args.max_length=1"),
        "max_length=1 is too short",
    ),
    ("dataset not found", lambda d, m, files, nt: fit(m, d / "missing.jsonl"), "dataset not found: "),
    (
        "RL objective on preference data",
        lambda d, m, files, nt: fit(m, files["standard"], "--model.objective=prefalign.objectives.PPOLite"),
        "PPO-lite on a Hugging Face model samples from prompts: set data.class_path to "
        "prefalign.data.hf.TRLPromptDataModule",
    ),
]


@pytest.mark.parametrize("make_args,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(
    make_args, message, tiny_model, data_files, no_template_model, in_tmp, capsys, monkeypatch
):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    inputs = in_tmp / "inputs"
    inputs.mkdir()
    got = main(make_args(inputs, tiny_model, data_files, no_template_model))
    err = capsys.readouterr().err
    assert got == 2, err
    assert message in err
    assert "Traceback (most recent" not in err and len(err.strip().splitlines()) == 1, err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "artifacts").exists()


def test_lora_without_peft_names_the_install(tiny_model, data_files, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft fails as if it were not installed
    got = main(fit(tiny_model, data_files["standard"], "--model.backbone.init_args.peft=" + json.dumps({"r": 4})))
    err = capsys.readouterr().err
    assert got == 2 and "needs the 'peft' package, which is not installed: pip install -e \".[hf]\"" in err
    assert len(err.strip().splitlines()) == 1 and not (in_tmp / "runs").exists()
