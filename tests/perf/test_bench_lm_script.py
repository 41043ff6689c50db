"""scripts/bench_lm.py: its step timer and its rollout worker (the timed runs themselves are the script's job)."""

import importlib.util
import json
from types import SimpleNamespace

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("bench_lm", REPO / "scripts/bench_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_timer_times_the_steps_after_warmup(tmp_path, monkeypatch):
    bench = load()
    clock = iter([10.0, 14.0])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    timer = bench.StepTimer(warmup=3, out=str(tmp_path / "t.json"))
    for step in range(3, 8):
        timer.on_train_batch_start(SimpleNamespace(global_step=step), None, None, step)
    timer.on_train_end(SimpleNamespace(global_step=10), None)
    assert json.loads((tmp_path / "t.json").read_text()) == {"steps": 7, "seconds": 4.0}


def test_rollout_worker_counts_samples(tmp_path):
    load().worker_rollout(2, str(tmp_path / "r.json"), prompts=4)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["samples"] == 4 * 4 * 2 and result["seconds"] > 0


def test_parameter_counts_grow_by_the_bpe_embedding_and_output_layer():
    from prefalign.models import TinyTransformer

    counts = load().parameter_counts()
    char_vocab, width = TinyTransformer().token_emb.weight.shape
    # token embedding + output weight + output bias: (50257 − char vocabulary) more rows each
    assert counts["bpe"] - counts["char"] == (50257 - char_vocab) * (2 * width + 1)
