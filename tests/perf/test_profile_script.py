"""scripts/profile_pipeline.py: py-spy samples sorted into the pipeline's phases, written as a docs block."""

import importlib.util
import json

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("profile_pipeline", REPO / "scripts/profile_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RAW = """\
<module> (x.py:1);main (cli.py:1);_run (trainer.py:1);_TrainingEpochLoop.run (l.py:1);training_step (m.py:2) 30
<module> (x.py:1);main (cli.py:1);_TrainingEpochLoop.run (l.py:1);Adam.step (adam.py:1);Closure (a.py:1);_engine_run_backward (g.py:1) 50
<module> (x.py:1);_TrainingEpochLoop.run (l.py:1);Adam.step (adam.py:1);_fused_adam (adam.py:9) 5
<module> (x.py:1);_TrainingEpochLoop.run (l.py:1);on_advance_end (l.py:4);_EvaluationLoop.run (e.py:1);log_figure (i.py:1);savefig (f.py:1) 7
<module> (x.py:1);_TrainingEpochLoop.run (l.py:1);on_advance_end (l.py:4);_EvaluationLoop.run (e.py:1);eval_step (c.py:1) 4
<module> (x.py:1);_find_and_load (<frozen importlib._bootstrap>:1176) 3
<module> (x.py:1);parse_arguments (j.py:1) 1
"""


def test_samples_are_sorted_into_phases_and_written(tmp_path, monkeypatch):
    script = load()
    counts = script.categorise(RAW)
    assert counts == {
        "training forward and loss": 30,
        "backward": 50,
        "optimizer step (Adam's arithmetic)": 5,
        "figures (matplotlib)": 7,  # a figure drawn during validation counts as figures
        "validation": 4,
        "imports": 3,
        script.OTHER: 1,
    }
    raw = tmp_path / "p.raw"
    raw.write_text(RAW)
    page = tmp_path / "docs/performance.md"
    page.parent.mkdir()
    page.write_text("a\n<!-- profile:begin -->\nold\n<!-- profile:end -->\nb\n")
    monkeypatch.setattr(script.reporting, "REPO", tmp_path)
    monkeypatch.setattr(script, "REPO", tmp_path)
    assert script.main(["--from-raw", str(raw), "--rate", "10", "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out/profile.json").read_text())
    assert saved["samples"] == counts and saved["rate"] == 10
    text = page.read_text()
    assert "| backward | 5.0 | 50% |" in text and "| imports | 0.3 | 3% |" in text and "\nold\n" not in text
    assert text.index("| backward") < text.index("| training forward")  # largest first
