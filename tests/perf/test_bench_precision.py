"""scripts/bench_precision.py: both precisions timed on the same work, the ratio and the fallback verdict reported."""

import importlib.util
import json

import pytest

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("bench_precision", REPO / "scripts/bench_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kernels", [True, False])
def test_tiny_run_reports_both_precisions_and_what_a_bf16_recipe_runs(tmp_path, monkeypatch, capsys, kernels):
    import prefalign.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: kernels)
    script = load()
    readme = tmp_path / "docs" / "performance.md"
    readme.parent.mkdir()
    readme.write_text("a\n<!-- benchprecision:begin -->\nold\n<!-- benchprecision:end -->\nb\n")
    monkeypatch.setattr(script, "REPO", tmp_path)
    assert (
        script.main(
            [
                "--batch",
                "2",
                "--sample-batch",
                "2",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "precision.json").read_text())
    assert set(saved["results"]) == {"fp32", "bf16"}
    assert all(v > 0 for r in saved["results"].values() for v in r.values())
    assert saved["bf16_recipe_runs"] == ("bf16-mixed" if kernels else "32-true")
    md = (tmp_path / "precision.md").read_text()
    f, b = saved["results"]["fp32"]["train_step_s"], saved["results"]["bf16"]["train_step_s"]
    assert f"| training step, batch 2 | {f:.3f} | {b:.3f} | {b / f:.2f} |" in md
    assert ("no bf16 kernels" in md) != kernels and "1 thread(s)" in md and md in capsys.readouterr().out
    assert readme.read_text() == f"a\n<!-- benchprecision:begin -->\n{md}<!-- benchprecision:end -->\nb\n"
