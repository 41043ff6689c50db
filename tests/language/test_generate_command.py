"""``python -m prefalign generate``: seeded, batched, prompts taken verbatim, one JSON line per sample."""

import json

import pytest

from prefalign.checkpoint import save_weights
from prefalign.cli import main
from prefalign.data.text import CharTokenizer
from prefalign.models import TinyTransformer


@pytest.fixture
def lm_weights(tmp_path):
    model = TinyTransformer(vocab_size=40, d_model=16, n_heads=2, n_layers=1, d_ff=32, block_size=8)
    model.vocab.copy_(CharTokenizer("abcdefgh .\n").to_codes(40))
    return save_weights(model, tmp_path / "lm.pt")


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seeded_batched_and_verbatim_prompts(lm_weights, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("abc \nh\r\nabc \n")  # the trailing space is part of the prompt; \r\n is a line ending
    args = [
        "generate",
        "--ckpt",
        str(lm_weights),
        "--prompts_file",
        str(prompts),
        "--num_samples",
        "2",
        "--max_new_tokens",
        "20",
        "--seed",
        "3",
        "--top_k",
        "5",
    ]
    assert main(args + ["--out", str(tmp_path / "a.jsonl")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.jsonl")]) == 0
    a = _read(tmp_path / "a.jsonl")
    assert a == _read(tmp_path / "b.jsonl")  # same seed, same text
    assert [r["prompt"] for r in a] == ["abc ", "abc ", "h", "h", "abc ", "abc "]
    assert all(
        len(r["completion"]) == 20 and set(r["completion"]) <= set("abcdefgh .\n") for r in a
    )  # past the block of 8
    main(args[:-2] + ["--seed", "4", "--out", str(tmp_path / "c.jsonl")])
    assert _read(tmp_path / "c.jsonl") != a


def test_jsonl_prompts(lm_weights, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ab"}\n\n{"prompt": "cd", "id": 2}\n')
    assert (
        main(
            [
                "generate",
                "--ckpt",
                str(lm_weights),
                "--prompts_file",
                str(prompts),
                "--max_new_tokens",
                "3",
                "--out",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 0
    )
    assert [r["prompt"] for r in _read(tmp_path / "o.jsonl")] == ["ab", "cd"]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d, lm, cls: ["--ckpt", str(cls), "--prompt", "ab"], "not a trained language model"),
        (
            lambda d, lm, cls: ["--ckpt", str(lm), "--prompts_file", str(_write(d / "empty.txt", ""))],
            "holds no prompts",
        ),
        (lambda d, lm, cls: ["--ckpt", str(lm), "--prompt", "abZ"], "outside the model's 11-character vocabulary: 'Z'"),
        (
            lambda d, lm, cls: ["--ckpt", str(lm), "--prompt", "ab", "--max_new_tokens", "0"],
            "--max_new_tokens=0 must be ≥ 1",
        ),
        (
            lambda d, lm, cls: ["--ckpt", str(lm), "--prompts_file", str(_write(d / "bad.jsonl", "[1]\n"))],
            "bad.jsonl:1 is not a JSON object",
        ),
    ],
)
def test_bad_input(make, message, lm_weights, tiny_reference, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    assert main(["generate", *make(tmp_path, lm_weights, tiny_reference), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out.jsonl").exists()


def _write(path, text):
    path.write_text(text)
    return path
