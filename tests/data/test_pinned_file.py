"""Tests for prefalign.data.pinned_file: a file made from a pinned sdist, verified, cached, one error when nothing works.

Offline: the "sdist" is a small synthetic file and the download is a stand-in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prefalign.data.pinned_file import PinnedFile, cache_root

SDIST = b"pretend archive: BODY"
BODY = b"BODY"


class Unavailable(RuntimeError):
    pass


def _pinned(
    download, sdist_sha256=hashlib.sha256(SDIST).hexdigest(), extract=lambda sdist: sdist.read_bytes().split(b": ")[1]
) -> PinnedFile:
    return PinnedFile(
        "f.txt",
        hashlib.sha256(BODY).hexdigest(),
        "pkg==1.0",
        "pkg-1.0.tar.gz",
        sdist_sha256,
        extract,
        download,
        "Test file",
        lambda root: f"Place pkg-1.0.tar.gz in {root}.",
        Unavailable,
    )


def _offline(folder):
    raise RuntimeError("no network")


def _download(downloads):
    def download(folder: Path) -> Path:
        downloads.append(folder)
        (folder / "pkg-1.0.tar.gz").write_bytes(SDIST)
        return folder / "pkg-1.0.tar.gz"

    return download


def test_cache_root_env_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFALIGN_X_DIR", str(tmp_path / "d"))
    assert cache_root("PREFALIGN_X_DIR", "x") == tmp_path / "d"
    monkeypatch.delenv("PREFALIGN_X_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root("PREFALIGN_X_DIR", "x") == tmp_path / "xdg" / "prefalign" / "x"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root("PREFALIGN_X_DIR", "x") == Path.home() / ".cache" / "prefalign" / "x"


def test_made_from_a_placed_or_downloaded_sdist_and_cached(tmp_path):
    placed, fetched = tmp_path / "placed", tmp_path / "fetched"
    placed.mkdir()
    (placed / "pkg-1.0.tar.gz").write_bytes(SDIST)
    (placed / "f.txt").write_bytes(b"corrupt")
    assert _pinned(_offline).load(placed) == BODY and (placed / "f.txt").read_bytes() == BODY  # no download needed
    downloads = []
    assert _pinned(_download(downloads)).load(fetched) == BODY and len(downloads) == 1
    assert sorted(p.name for p in fetched.iterdir()) == [".lock", "f.txt"]  # the downloaded sdist was a temporary
    # verified and cached: used as is, neither read out of an sdist nor downloaded again
    assert _pinned(_offline, extract=lambda sdist: pytest.fail("must not extract")).ensure(fetched) == fetched / "f.txt"


def test_nothing_verified_is_one_error_listing_what_was_tried_and_the_manual_fix(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"corrupt")
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(b"another archive")
    with pytest.raises(Unavailable) as e:
        _pinned(_offline).ensure(tmp_path)
    assert str(e.value) == (
        f"Test file unavailable. Tried: {tmp_path / 'f.txt'} exists but its sha256 is {hashlib.sha256(b'corrupt').hexdigest()}, "
        f"not {hashlib.sha256(BODY).hexdigest()} (corrupt or another file); {tmp_path / 'pkg-1.0.tar.gz'}: sha256 mismatch; "
        f"pip download pkg==1.0: no network. Place pkg-1.0.tar.gz in {tmp_path}."
    )
    with pytest.raises(
        Unavailable, match=r"pip download pkg==1\.0: sha256 [0-9a-f]{64}, expected 0{64}"
    ):  # not the pinned sdist
        _pinned(_download([]), sdist_sha256="0" * 64).ensure(tmp_path / "other")
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(SDIST)
    with pytest.raises(
        Unavailable, match=r"f\.txt read from .*pkg-1\.0\.tar\.gz does not have the expected sha256 .* Place pkg-1\.0"
    ):
        _pinned(_offline, extract=lambda sdist: b"other bytes").ensure(tmp_path)
    assert (tmp_path / "f.txt").read_bytes() == b"corrupt"  # nothing unverified was written
