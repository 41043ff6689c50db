"""A parse error of fit/validate/test/predict is one line naming the option, the value and the fix, exit code 2."""

from __future__ import annotations

import pytest

from prefalign.cli import main
from prefalign.cli_parser import condensed
from tests.conftest import CONFIGS, SYNTHETIC_ARGS

FIT = ["fit", "--config", str(CONFIGS / "seed_dpo.yaml"), *SYNTHETIC_ARGS]


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--model.objective=prefalign.objectives.NoSuchLoss"],
            "--model.objective: cannot use class_path prefalign.objectives.NoSuchLoss: "
            "module 'prefalign.objectives' has no attribute 'NoSuchLoss'",
        ),
        (["--trainer.max_epochs=abc"], "--trainer.max_epochs: Expected a <class 'int'>, got abc"),
        (["--no_such_option=1"], "unrecognized arguments: --no_such_option=1"),
        (["--model.objective.init_args.beta=x"], "Parser key \"beta\": Expected a <class 'float'>. Got value: x"),
    ],
)
def test_a_parse_error_is_one_line_naming_the_option(extra, message, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    with pytest.raises(SystemExit) as exit_:
        main(FIT + extra)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("python -m prefalign fit: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err and err.strip().endswith("(options: python -m prefalign fit --help)")
    assert list(in_tmp.iterdir()) == []


def test_condensed_keeps_a_message_without_a_key_whole():
    assert condensed("unrecognized arguments:\n  --x=1") == "unrecognized arguments: --x=1"
