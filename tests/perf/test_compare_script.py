"""scripts/compare_objectives.py: its figure from saved results, and every row's arguments parse."""

import importlib.util
import json

import pytest

from prefalign.cli import main
from tests.conftest import REPO


def load_script():
    spec = importlib.util.spec_from_file_location("compare_objectives", REPO / "scripts" / "compare_objectives.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replot_draws_the_figure_from_saved_results(tmp_path):
    script = load_script()
    rows = [
        {"name": n, "test/acc_noisy": a, "test/acc_clean": c}
        for n, a, c in (("sft_both", 0.94, 0.98), ("dpo", 0.84, 0.98), ("seed_dpo", 0.15, 0.41))
    ]
    (tmp_path / "results.json").write_text(json.dumps({"reference": {"noisy": 0.5, "clean": 0.98}, "rows": rows}))
    assert script.main(["--replot", "--docs", str(tmp_path)]) == 0
    png = tmp_path / "figures" / "objectives.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize("row", list(load_script().ROWS))
def test_every_row_parses(row, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", *load_script().ROWS[row][1], "--print_config"])
    assert e.value.code in (0, None) and "objective" in capsys.readouterr().out


def test_merge_keeps_rows_from_the_same_reference_and_refuses_others(tmp_path):
    script = load_script()
    saved = {
        "reference_sha256": "a" * 64,
        "runs": [{"date": "d1", "rows": ["dpo", "ipo"], "total_s": 1}],
        "rows": [{"name": "dpo", "x": 1}, {"name": "ipo", "x": 2}],
    }
    (tmp_path / "results.json").write_text(json.dumps(saved))
    rows, runs = script.merge_saved(
        tmp_path / "results.json", [{"name": "ipo", "x": 3}], "a" * 64, {"date": "d2", "rows": ["ipo"], "total_s": 2}
    )
    assert sorted((r["name"], r["x"]) for r in rows) == [
        ("dpo", 1),
        ("ipo", 3),
    ]  # the redone row replaces the saved one
    assert runs == [{"date": "d1", "rows": ["dpo"], "total_s": 1}, {"date": "d2", "rows": ["ipo"], "total_s": 2}]
    with pytest.raises(SystemExit, match="other reference weights"):
        script.merge_saved(tmp_path / "results.json", [], "b" * 64, {})
