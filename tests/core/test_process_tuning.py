import ctypes
import os

import pytest
import torch

from prefalign import process_tuning
from prefalign.process_tuning import NVML_CHECK_VARIABLE, skip_nvml_check_without_nvml


def _no_library(name, *a, **k):
    raise OSError(f"{name}: cannot open shared object file")


@pytest.fixture
def cuda_built(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)


def test_the_check_is_turned_off_when_nvml_cannot_be_loaded(monkeypatch, cuda_built):
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    monkeypatch.setattr(process_tuning.ctypes, "CDLL", _no_library)
    assert skip_nvml_check_without_nvml()
    assert os.environ[NVML_CHECK_VARIABLE] == "0"


def test_the_check_stays_where_nvml_exists(monkeypatch, cuda_built):
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    monkeypatch.setattr(process_tuning.ctypes, "CDLL", lambda name, *a, **k: object())
    assert not skip_nvml_check_without_nvml()
    assert os.environ[NVML_CHECK_VARIABLE] == "1"


@pytest.mark.parametrize("value", [None, "0"])
def test_a_check_nobody_turned_on_is_left_alone(monkeypatch, cuda_built, value):
    if value is None:
        monkeypatch.delenv(NVML_CHECK_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(NVML_CHECK_VARIABLE, value)
    monkeypatch.setattr(process_tuning.ctypes, "CDLL", _no_library)
    assert not skip_nvml_check_without_nvml()
    assert os.environ.get(NVML_CHECK_VARIABLE) == value


def test_the_cli_applies_it(monkeypatch, cuda_built):
    from prefalign.cli import main

    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    monkeypatch.setattr(process_tuning.ctypes, "CDLL", _no_library)
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert os.environ[NVML_CHECK_VARIABLE] == "0"


def test_nvml_loadable_matches_ctypes():
    try:
        ctypes.CDLL(process_tuning.NVML_LIBRARY)
        expected = True
    except OSError:
        expected = False
    assert process_tuning.nvml_loadable() is expected
