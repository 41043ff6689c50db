"""GPT-2 BPE behind the ``bpe`` extra: the tokenizer on hand examples, the verified BPE file (corrupt cache, nothing
available), the tokenizer travelling in a weights file, refusal of a char/gpt2 mismatch, and a tiny fit → generate →
DPO on synthetic text.

Tests marked by the ``gpt2`` fixture need tiktoken and the real ``gpt2.tiktoken`` (fetched from PyPI once, then
cached); without them they skip with the reason. The others use :class:`FakeEncoding` (UTF-8 bytes as ids) in place
of tiktoken, so the file handling and the persistence are checked everywhere.
"""

import hashlib
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import prefalign.data.text.gpt2_vocab as vocab
import prefalign.data.text.model_tokenizer as mt
from prefalign.checkpoint import CheckpointError, load_weights, save_weights
from prefalign.cli import main
from prefalign.data.text import (
    BPETokenizer,
    CharTextDataModule,
    CharTokenizer,
    TextPreferenceDataModule,
    TokenizerMismatchError,
)
from prefalign.data.text.bpe_tokenizer import TokenizerUnavailableError, gpt2_tokenizer, parse_ranks
from prefalign.families.language import LanguageFamily
from prefalign.models import TinyTransformer
from prefalign.models.loading import check_architecture, load_model
from tests.conftest import CONFIGS


@pytest.fixture(scope="session")
def gpt2() -> BPETokenizer:
    """The real GPT-2 tokenizer, or a skip saying what is missing."""
    try:
        return gpt2_tokenizer()
    except TokenizerUnavailableError as e:
        pytest.skip(f"tiktoken unavailable: {e}")
    except vocab.VocabularyUnavailableError as e:
        pytest.skip(f"gpt2.tiktoken unavailable (no PyPI here?): {e}")


class FakeEncoding:
    """Stands in for tiktoken: a string's UTF-8 bytes are its ids, and there are GPT-2's 50,257 of them (an id
    past 255 decodes as its low byte: a sample of an untrained model may hold any id)."""

    n_vocab = 50257

    def encode_ordinary(self, text):
        return list(text.encode())

    def decode(self, ids):
        return bytes(i % 256 for i in ids).decode(errors="replace")


def fake_gpt2(sha256=vocab.VOCAB_SHA256) -> BPETokenizer:
    return BPETokenizer(FakeEncoding(), "gpt2", sha256)


def tiny_lm(tokenizer="char", vocab_size=12, block_size=8) -> TinyTransformer:
    return TinyTransformer(
        vocab_size=vocab_size, d_model=8, n_heads=1, n_layers=1, d_ff=8, block_size=block_size, tokenizer=tokenizer
    )


# ---------------------------------------------------------------------------------------------- the tokenizer


def test_gpt2_ids_of_hand_examples_and_round_trips(gpt2):
    assert len(gpt2) == 50257 and gpt2.name == "gpt2" and gpt2.sha256 == vocab.VOCAB_SHA256
    # GPT-2's well-known ids: "Hello world" and Hamlet (" the" = 262, "," = 11, "." = 13)
    assert gpt2.encode("Hello world").tolist() == [15496, 995]
    assert gpt2.encode("To be, or not to be: that is the question.").tolist() == [
        2514,
        307,
        11,
        393,
        407,
        284,
        307,
        25,
        326,
        318,
        262,
        1808,
        13,
    ]
    for text in ("ROMEO.\nWhat, ho! Apothecary!\n\n  ", "naïve café — 🙂", "it's 1599's"):
        ids = gpt2.encode(text)
        assert ids.dtype == torch.long and gpt2.decode(ids) == text and gpt2.decode(ids.tolist()) == text
    # the special token is plain text in the data: never id 50256
    assert 50256 not in gpt2.encode("a<|endoftext|>b").tolist() and gpt2.decode([50256]) == "<|endoftext|>"
    assert gpt2.same_as(fake_gpt2()) and not gpt2.same_as(fake_gpt2("0" * 64)) and not gpt2.same_as(CharTokenizer("ab"))


def test_ranks_parsed_from_the_verified_bytes_equal_tiktokens_loader(gpt2, monkeypatch):
    from tiktoken.load import load_tiktoken_bpe

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's loader would otherwise copy the file into its own cache
    path = vocab.ensure_gpt2_vocab()
    ranks = parse_ranks(vocab.load_gpt2_vocab())
    assert ranks == load_tiktoken_bpe(str(path)) and len(ranks) == 50256
    with pytest.raises(ValueError, match="line 2 of the BPE file"):
        parse_ranks(b"IQ== 0\nnot-a-rank-line\n")


def test_without_tiktoken_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tiktoken", None)  # `import tiktoken` raises ImportError
    with pytest.raises(TokenizerUnavailableError, match=r"pip install -e \.\[bpe\]"):
        gpt2_tokenizer()


# ---------------------------------------------------------------------------------------------- the BPE file


def _fake_sdist(path: Path, body: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            (vocab.MEMBER, body),
            ("openai_whisper-20250625/whisper/__init__.py", b"raise SystemExit('never imported')"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _offline(folder):
    raise RuntimeError("pip download exited with code 1: no network")


@pytest.fixture
def fake_pins(monkeypatch, tmp_path):
    """A small stand-in for gpt2.tiktoken and its sdist, with the pins pointed at them: (body, sdist bytes)."""
    body = b"IQ== 0\nIg== 1\n"
    sdist = _fake_sdist(tmp_path / "made.tar.gz", body).read_bytes()
    monkeypatch.setattr(vocab, "VOCAB_SHA256", hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(vocab, "SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    return body, sdist


def test_a_corrupt_cached_file_is_refused_with_one_error_naming_what_was_tried_and_the_manual_fix(
    tmp_path, monkeypatch, fake_pins
):
    root = tmp_path / "cache"
    root.mkdir()
    (root / vocab.VOCAB_NAME).write_bytes(fake_pins[0])
    monkeypatch.setattr(vocab, "_pip_download", _offline)
    assert vocab.load_gpt2_vocab(root) == fake_pins[0]  # verified: used without any download
    changed = b"J" + fake_pins[0][1:]  # one byte changed after it was cached
    (root / vocab.VOCAB_NAME).write_bytes(changed)
    (root / vocab.SDIST_NAME).write_bytes(b"not an sdist")
    with pytest.raises(vocab.VocabularyUnavailableError) as e:
        vocab.load_gpt2_vocab(root)
    message = str(e.value)
    assert f"sha256 is {hashlib.sha256(changed).hexdigest()}, not {vocab.VOCAB_SHA256}" in message
    assert (
        f"{vocab.SDIST_NAME}: sha256 mismatch" in message
        and "pip download openai-whisper==20250625" in message
        and "no network" in message
    )
    assert (
        "PREFALIGN_TOKENIZER_DIR" in message
        and "pip download --no-deps --no-binary :all: openai-whisper==20250625" in message
    )
    assert "data.init_args.tokenizer: char" in message


def test_nothing_available_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr(vocab, "_pip_download", _offline)
    monkeypatch.setenv("PREFALIGN_TOKENIZER_DIR", str(tmp_path / "empty"))
    with pytest.raises(
        vocab.VocabularyUnavailableError,
        match=r"GPT-2 BPE vocabulary unavailable\. Tried: pip download openai-whisper==20250625: "
        r"pip download exited with code 1: no network\. To place it by hand: copy a gpt2\.tiktoken "
        rf"whose sha256 is {vocab.VOCAB_SHA256} .* into {tmp_path / 'empty'}",
    ):
        vocab.load_gpt2_vocab()


def test_a_corrupt_cache_is_replaced_from_a_verified_sdist_reading_only_its_member(tmp_path, monkeypatch, fake_pins):
    body, sdist = fake_pins
    placed, fetched = tmp_path / "placed", tmp_path / "fetched"
    placed.mkdir()
    (placed / vocab.SDIST_NAME).write_bytes(sdist)  # placed by hand: no download
    (placed / vocab.VOCAB_NAME).write_bytes(b"corrupt")
    monkeypatch.setattr(vocab, "_pip_download", lambda folder: pytest.fail("must not download"))
    assert vocab.load_gpt2_vocab(placed) == body and (placed / vocab.VOCAB_NAME).read_bytes() == body
    downloads = []

    def download(folder):
        downloads.append(folder)
        (folder / vocab.SDIST_NAME).write_bytes(sdist)
        return folder / vocab.SDIST_NAME

    monkeypatch.setattr(vocab, "_pip_download", download)
    assert vocab.load_gpt2_vocab(fetched) == body and len(downloads) == 1
    assert sorted(p.name for p in fetched.iterdir()) == [".lock", vocab.VOCAB_NAME]  # the sdist was a temporary
    monkeypatch.setattr(vocab, "SDIST_SHA256", "0" * 64)  # a download that is not the pinned file is refused
    with pytest.raises(
        vocab.VocabularyUnavailableError,
        match=r"pip download openai-whisper==20250625: sha256 [0-9a-f]{64}, expected 0{64}",
    ):
        vocab.load_gpt2_vocab(tmp_path / "other")


# ---------------------------------------------------------------------------------------------- persistence


def test_a_gpt2_model_records_its_tokenizer_and_a_weights_file_alone_rebuilds_it(tmp_path, monkeypatch):
    model = tiny_lm("gpt2", vocab_size=50257)
    assert mt.tokenizer_name_of(model) == "gpt2" and mt.tokenizer_of_model(model) is None  # fresh: nothing recorded yet
    with pytest.raises(ValueError, match="vocab_size to at least 50257"):
        mt.bind_tokenizer(tiny_lm("gpt2", vocab_size=1000), fake_gpt2())
    mt.bind_tokenizer(model, fake_gpt2())
    path = save_weights(model, tmp_path / "bpe.pt")
    payload = load_weights(path)
    assert (
        payload["init_args"]["tokenizer"] == "gpt2"
        and bytes(payload["state_dict"]["tokenizer_sha256"].tolist()).hex() == vocab.VOCAB_SHA256
    )
    loaded = load_model(path)
    monkeypatch.setattr(mt, "gpt2_tokenizer", fake_gpt2)  # what loading the verified local file returns
    rebuilt = mt.tokenizer_of_model(loaded)
    assert isinstance(rebuilt, BPETokenizer) and rebuilt.sha256 == vocab.VOCAB_SHA256 and len(rebuilt) == 50257
    monkeypatch.setattr(mt, "gpt2_tokenizer", lambda: fake_gpt2("ab" * 32))  # the local file is another one
    with pytest.raises(
        TokenizerMismatchError,
        match=f"trained with a gpt2 BPE file of sha256 {vocab.VOCAB_SHA256}, but the gpt2 file here has sha256 {'ab' * 32}",
    ):
        mt.tokenizer_of_model(loaded)


def test_char_weights_files_are_unchanged_and_files_without_a_tokenizer_field_load_as_char(tmp_path):
    model = tiny_lm()
    mt.bind_tokenizer(model, CharTokenizer("abc "))
    path = save_weights(model, tmp_path / "char.pt")
    payload = load_weights(path)
    assert (
        "tokenizer" not in payload["init_args"] and "tokenizer_sha256" not in payload["state_dict"]
    )  # as before BPE existed
    assert mt.tokenizer_of_model(load_model(path)).chars == "abc "
    check_architecture(tiny_lm(), path)  # a char backbone configured today still accepts it as a reference
    with pytest.raises(CheckpointError, match="'tokenizer': 'gpt2'"):
        check_architecture(tiny_lm("gpt2", vocab_size=12), path)


def _family_setup(model, datamodule):
    module = SimpleNamespace(policy=model, datamodule=datamodule)
    family = LanguageFamily()
    family.setup(module, "fit")
    return family


@pytest.fixture
def gpt2_data(monkeypatch):
    monkeypatch.setattr(mt, "gpt2_tokenizer", fake_gpt2)
    dm = CharTextDataModule(source="synthetic", synthetic_chars=3000, block_size=8, tokenizer="gpt2", eval_prompts=0)
    dm.setup("fit")
    return dm


def test_the_family_binds_a_fresh_gpt2_model_and_refuses_char_gpt2_mismatches(gpt2_data):
    model = tiny_lm("gpt2", vocab_size=50257)
    family = _family_setup(model, gpt2_data)
    assert (
        mt.recorded_sha256(model) == vocab.VOCAB_SHA256
        and family.n_vocab == 50257
        and family.tokenizer is gpt2_data.tokenizer
    )
    trained_char = tiny_lm()
    mt.bind_tokenizer(trained_char, CharTokenizer("abc "))
    with pytest.raises(TokenizerMismatchError, match="uses the char tokenizer but the data uses gpt2"):
        _family_setup(trained_char, gpt2_data)  # a char checkpoint with gpt2 data
    with pytest.raises(TokenizerMismatchError, match="uses the char tokenizer but the data uses gpt2"):
        _family_setup(tiny_lm(), gpt2_data)  # a fresh char model with gpt2 data
    char_data = CharTextDataModule(source="synthetic", synthetic_chars=3000, block_size=8, eval_prompts=0)
    char_data.setup("fit")
    with pytest.raises(
        TokenizerMismatchError,
        match="uses the gpt2 tokenizer but the data uses char.*Set data.init_args.tokenizer: gpt2",
    ):
        _family_setup(model, char_data)  # a gpt2 checkpoint with char data


def test_mining_refuses_a_reference_of_the_other_tokenizer(tmp_path, gpt2_data):
    char_ref = tiny_lm(vocab_size=64, block_size=16)
    mt.bind_tokenizer(char_ref, CharTokenizer.from_text(gpt2_data.text["train"]))
    gpt2_ref = tiny_lm("gpt2", vocab_size=50257, block_size=16)
    mt.bind_tokenizer(gpt2_ref, fake_gpt2())
    common = dict(
        source="synthetic",
        synthetic_chars=3000,
        block_size=16,
        prompt_length=8,
        response_length=8,
        num_prompts=8,
        cache_dir=str(tmp_path),
    )
    with pytest.raises(
        TokenizerMismatchError, match=r"the reference .*char\.pt uses the char tokenizer but the data uses gpt2"
    ):
        TextPreferenceDataModule(
            tokenizer="gpt2", reference_ckpt=str(save_weights(char_ref, tmp_path / "char.pt")), **common
        ).setup("fit")
    with pytest.raises(
        TokenizerMismatchError, match=r"the reference .*bpe\.pt uses the gpt2 tokenizer but the data uses char"
    ):
        TextPreferenceDataModule(reference_ckpt=str(save_weights(gpt2_ref, tmp_path / "bpe.pt")), **common).setup("fit")
    dm = TextPreferenceDataModule(
        tokenizer="gpt2", pair_strategy="spin", reference_ckpt=str(tmp_path / "bpe.pt"), **common
    )
    dm.setup(
        "fit"
    )  # the same tokenizer: pairs are mined (spin: no ties to drop from an untrained reference), samples decoded by it
    assert (
        dm.mining_stats["mining/pairs"] == 8
        and dm.pairs["rejected"].shape == (8, 8)
        and dm.tokenizer.same_as(fake_gpt2())
    )


def test_generate_rebuilds_the_gpt2_tokenizer_from_the_weights_file(tmp_path, monkeypatch, capsys):
    model = tiny_lm("gpt2", vocab_size=50257)
    mt.bind_tokenizer(model, fake_gpt2())
    path = save_weights(model, tmp_path / "bpe.pt")
    monkeypatch.setattr(mt, "gpt2_tokenizer", fake_gpt2)
    out = tmp_path / "o.jsonl"
    assert (
        main(
            [
                "generate",
                "--ckpt",
                str(path),
                "--prompt",
                "To be",
                "--max_new_tokens",
                "5",
                "--num_samples",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["To be", "To be"] and all(isinstance(r["completion"], str) for r in rows)
    monkeypatch.delenv("PREFALIGN_DEBUG")
    assert main(["generate", "--ckpt", str(path), "--prompt", "x" * 9, "--out", str(out)]) == 2
    assert "prompt 1 is 9 tokens long, more than the model's block of 8" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- end to end


def test_pretrain_generate_and_dpo_with_gpt2_on_synthetic_text(gpt2, in_tmp):
    tiny = [
        "--data.init_args.source=synthetic",
        "--data.init_args.synthetic_chars=12000",
        "--data.init_args.block_size=16",
        "--model.backbone.init_args.block_size=16",
        "--model.backbone.init_args.d_model=16",
        "--model.backbone.init_args.n_heads=2",
        "--model.backbone.init_args.d_ff=32",
        "--data.init_args.max_val_windows=8",
        "--data.init_args.eval_prompts=2",
        "--data.init_args.prompt_length=8",
        "--data.init_args.eval_new_tokens=8",
        "--model.family.init_args.eval_new_tokens=8",
        "--trainer.max_epochs=1",
    ]
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "lm_pretrain_bpe.yaml"),
            *tiny,
            "--data.init_args.steps_per_epoch=30",
            "--data.init_args.batch_size=16",
            "--model.optimizer.init_args.lr=0.01",
            "--model.export_path=artifacts/bpe.pt",
        ]
    )
    metrics = json.loads((in_tmp / "runs/lm_pretrain_bpe/version_0/results_test.json").read_text())["metrics"]
    assert metrics["test/loss"] < 0.6 * torch.log(torch.tensor(50257.0)).item()  # learnt the synthetic lexicon's tokens
    assert mt.tokenizer_of_model(load_model(in_tmp / "artifacts/bpe.pt")).same_as(gpt2)
    assert (
        main(
            [
                "generate",
                "--ckpt",
                "artifacts/bpe.pt",
                "--prompt",
                "The king",
                "--max_new_tokens",
                "6",
                "--out",
                "s.jsonl",
            ]
        )
        == 0
    )
    assert json.loads((in_tmp / "s.jsonl").read_text())["completion"]
    # the BPE overlay on the DPO config: policy, reference and data all gpt2
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "lm_dpo.yaml"),
            "--config",
            str(CONFIGS / "tokenizer/gpt2.yaml"),
            *tiny,
            "--model.reference_ckpt=artifacts/bpe.pt",
            "--reference_recipe=null",
            "--data.init_args.pair_strategy=spin",
            "--data.init_args.num_prompts=32",
            "--data.init_args.response_length=8",
            "--data.init_args.batch_size=8",
            "--data.init_args.eval_batch_size=8",
        ]
    )
    dpo = json.loads((in_tmp / "runs/lm_dpo/version_0/results_test.json").read_text())["metrics"]
    assert {"test/kl_ref", "test/valid_words", "test/reference/valid_words"} <= set(dpo)
