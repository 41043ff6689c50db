"""scripts/bench_hf.py end to end on the parity tests' tiny Llama: 2 steps, 1 repeat, into a temporary page.

No timing assertions (the numbers of a 2-step run on a shared machine mean nothing); what is checked is that all three
contenders ran in their own processes, the block was written between its markers, and every row parses.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("trl")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_hf.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_hf_writes_a_parsable_table(tmp_path, monkeypatch, capsys):
    bench = load_script()
    page = tmp_path / "docs" / "performance.md"
    page.parent.mkdir()
    page.write_text("# Performance\n\nbefore\n\n<!-- bench-hf:begin -->\nold\n<!-- bench-hf:end -->\n\nafter\n")
    monkeypatch.setattr(bench, "REPO", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    bench.main(["--size", "tiny", "--steps", "2", "--repeats", "1", "--json", str(tmp_path / "raw.json")])

    out = capsys.readouterr().out
    assert out.startswith("Machine: ") and "cores" in out and "torch" in out  # the machine comes first
    text = page.read_text()
    assert text.startswith("# Performance\n\nbefore\n") and text.endswith("after\n") and "\nold\n" not in text
    block = text.split("<!-- bench-hf:begin -->", 1)[1].split("<!-- bench-hf:end -->", 1)[0]
    assert "Machine: " in block and "Goal (issue #25)" in block
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| contender")]
    assert len(rows) == 3
    for row, label in zip(rows, ("prefalign", "TRL `DPOTrainer` (default", "precompute_ref_log_probs=True")):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert label in cells[0]
        pairs, tokens, ratio, _, pairs_incl, ratio_incl, rss = cells[1:8]
        assert float(pairs) > 0 and float(tokens) > 0 and float(pairs_incl) > 0 and float(rss) > 100
        assert float(ratio) > 0 and float(ratio_incl) > 0
        losses = [float(x) for x in cells[8].split(",")]
        assert len(losses) == 2 and abs(losses[0] - 0.693147) < 1e-5  # step 1: policy = reference, loss ln 2
    assert float(rows[0].split("|")[4]) == 1.0  # prefalign against itself
    assert re.search(r"\(agree within 0\.0001\); completion tokens of every step identical on all three: yes", block)
    assert re.search(r"— \*\*(met|not met)\*\* on this machine", block)
    # --from-json rebuilds the same rows from the saved measurements, running nothing
    again = bench.main(["--from-json", str(tmp_path / "raw.json"), "--no-docs"])
    assert [line for line in again.splitlines() if line.startswith("| ")] == [
        line for line in block.splitlines() if line.startswith("| ")
    ]
