"""Fixtures for the Hugging Face tests: a tiny local Llama and TRL-format data files (nothing from the hub)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")

from tests.hf.tiny import STANDARD, conversational, distinct_rows, implicit, make_model_dir, write_jsonl  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trl_data")
    return {
        "standard": write_jsonl(STANDARD * 2, folder / "standard.jsonl"),
        "conversational": write_jsonl(conversational(STANDARD) * 2, folder / "conversational.jsonl"),
        "implicit": write_jsonl(implicit(STANDARD) * 2, folder / "implicit.jsonl"),
        "distinct": write_jsonl(distinct_rows(16), folder / "distinct.jsonl"),
    }
