"""scripts/bench_hf.py end to end on the parity tests' tiny Llama (DPO, and GRPO with --method grpo): 2 steps, 1
repeat, into a temporary page.

No timing assertions (the numbers of a 2-step run on a shared machine mean nothing); what is checked is that every
contender ran in its own process, the block was written between its markers (the other mode's left alone), every row
parses, and the counts agree (GRPO: completions and tokens of each step, their ratio, the forced completion length).
"""

from __future__ import annotations

import importlib.util
import json
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
    page.write_text(
        "# Performance\n\nbefore\n\n<!-- bench-hf:begin -->\n20m block\n<!-- bench-hf:end -->\n\n"
        "<!-- bench-hf-tiny:begin -->\nold\n<!-- bench-hf-tiny:end -->\n\nafter\n"
    )
    monkeypatch.setattr(bench, "REPO", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    bench.main(["--size", "tiny", "--steps", "2", "--repeats", "1", "--json", str(tmp_path / "raw.json")])

    out = capsys.readouterr().out
    assert out.startswith("Machine: ") and "cores" in out and "torch" in out  # the machine comes first
    text = page.read_text()
    assert text.startswith("# Performance\n\nbefore\n") and text.endswith("after\n") and "\nold\n" not in text
    assert "<!-- bench-hf:begin -->\n20m block\n<!-- bench-hf:end -->" in text  # the tiny model has its own block
    block = text.split("<!-- bench-hf-tiny:begin -->", 1)[1].split("<!-- bench-hf-tiny:end -->", 1)[0]
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


GRPO_PAGE = (
    "# Performance\n\n<!-- bench-hf:begin -->\ndpo block\n<!-- bench-hf:end -->\n\n"
    "<!-- bench-hf-grpo:begin -->\nold\n<!-- bench-hf-grpo:end -->\n\nafter\n"
)


def test_bench_hf_grpo_writes_its_own_block(tmp_path, monkeypatch, capsys):
    """GRPO mode end to end on the tiny Llama: 2 steps of 2 prompts x 4 completions of exactly 24 tokens, 1 repeat;
    the DPO block is left alone. Both sides force the length with min_new_tokens: unforced, the tiny model's near-uniform
    distribution samples its EOS (1 id in 120) somewhere in the 384 tokens with probability ~0.96, so a side that did
    not pass it on would fail the length checks."""
    bench = load_script()
    page = tmp_path / "docs" / "performance.md"
    page.parent.mkdir()
    page.write_text(GRPO_PAGE)
    monkeypatch.setattr(bench, "REPO", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw_file = tmp_path / "raw.json"
    args = ["--method", "grpo", "--size", "tiny", "--steps", "2", "--repeats", "1", "--prompts", "2", "--k", "4"]
    bench.main([*args, "--max-new-tokens", "24", "--json", str(raw_file)])

    out = capsys.readouterr().out
    assert out.startswith("Machine: ") and "samples/s" in out
    text = page.read_text()
    assert "<!-- bench-hf:begin -->\ndpo block\n<!-- bench-hf:end -->" in text and text.endswith("after\n")
    block = text.split("<!-- bench-hf-grpo:begin -->", 1)[1].split("<!-- bench-hf-grpo:end -->", 1)[0]
    assert "\nold\n" not in block and "Machine: " in block and "--method grpo --size tiny --steps 2" in block
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| contender")]
    assert len(rows) == 2
    for row, label in zip(rows, ("prefalign `fit --config configs/hf_grpo.yaml`", "TRL `GRPOTrainer`")):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert label in cells[0]
        samples, tokens, ratio, length, per_step, reward, rss, per_repeat = (float(c) for c in cells[1:9])
        assert samples > 0 and ratio > 0 and rss > 100 and per_repeat > 0
        assert length == 24.0 and per_step == 8.0  # every completion exactly max_new_tokens, 2 prompts x 4 a step
        assert abs(tokens - 24 * samples) <= 0.5 + 0.01 * tokens  # tokens/s: 24 a sample (rounded to an integer)
        assert reward <= 0  # TargetLength(20): minus the distance from 20 characters
    assert rows[0].split("|")[4].strip() == "1.00"  # prefalign against itself
    assert "Mean completion length: prefalign 24.0, TRL 24.0 tokens (within 10%)" in block
    assert re.search(r"GRPO samples/s ≥ 1 × TRL's .*: \d+\.\d\d × — \*\*(met|not met)\*\* on this machine", block)

    saved = json.loads(raw_file.read_text())
    assert saved["args"]["method"] == "grpo" and set(saved["raw"]) == {"prefalign", "trl"}
    for contender, runs in saved["raw"].items():
        (run,) = runs
        assert run["start"] < run["ends"][0] < run["ends"][1], contender  # two optimizer steps, one timer each
        assert run["completions"] == [8, 8] and run["tokens"] == [192, 192], contender  # one generation batch a step
        assert len(run["rewards"]) == 2, contender
    # --from-json rebuilds the same rows from the saved measurements, running nothing
    again = bench.main(["--from-json", str(raw_file), "--no-docs"])
    assert [line for line in again.splitlines() if line.startswith("| ")] == [
        line for line in block.splitlines() if line.startswith("| ")
    ]


def test_grpo_block_flags_completion_lengths_apart():
    bench = load_script()
    args = bench.parse_args(["--method", "grpo", "--max-new-tokens", "64", "--min-new-tokens", "0"])
    assert args.lr == 1e-6 and bench.parse_args([]).lr == 1e-4  # TRL's GRPO default; the DPO mode's unchanged
    runs = {"prefalign": {"mean_length": 40.0}, "trl": {"mean_length": 60.0}}
    note = bench.bench_hf_grpo.length_note(runs, args, 0)
    assert "**33% apart" in note and "stop at a sampled EOS" in note
    runs["trl"]["mean_length"] = 42.0
    assert "(within 10%)" in bench.bench_hf_grpo.length_note(runs, args, 0)
