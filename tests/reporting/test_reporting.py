"""scripts/reporting.py: generated blocks land on their page, the newest run is found by version number."""

import importlib.util

import pytest

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("reporting", REPO / "scripts" / "reporting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_block_replaces_only_the_block_on_its_page(tmp_path):
    reporting = load()
    page = tmp_path / reporting.BLOCKS["benchlm"]
    page.parent.mkdir(parents=True)
    page.write_text("a\n<!-- benchlm:begin -->\nold\n<!-- benchlm:end -->\nb\n")
    assert reporting.write_block("benchlm", "new\n", tmp_path) == page
    assert page.read_text() == "a\n<!-- benchlm:begin -->\nnew\n<!-- benchlm:end -->\nb\n"
    assert reporting.read_block(page, "benchlm") == "new\n"
    page.write_text("no markers")
    with pytest.raises(SystemExit, match="lacks"):
        reporting.write_block("benchlm", "x", tmp_path)


def test_every_block_is_on_its_page_once():
    reporting = load()
    for name, path in reporting.BLOCKS.items():
        text = (REPO / path).read_text()
        begin, end = reporting.markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1, (name, path)


def test_latest_run_orders_by_version_number(tmp_path):
    reporting = load()
    for n in (2, 10, 9):
        (tmp_path / "runs" / "x" / f"version_{n}").mkdir(parents=True)
        (tmp_path / "runs" / "x" / f"version_{n}" / "results_test.json").write_text("{}")
    (tmp_path / "runs" / "x" / "version_11").mkdir()  # unfinished: no results
    assert reporting.latest_run("x", root=tmp_path).name == "version_10"
    assert reporting.latest_run("missing", root=tmp_path) is None


def test_link_is_relative_to_the_page():
    reporting = load()
    assert reporting.link("docs/figures/a.png", "diffusion") == "../figures/a.png"
    assert reporting.link("docs/figures/a.png", "bench") == "figures/a.png"


def test_readme_family_table_is_current():
    reporting = load()
    assert reporting.read_block(REPO / "README.md", "families") == reporting.family_table(REPO) + "\n", (
        "run python scripts/update_docs.py"
    )


def test_readme_keeps_the_promised_commands():
    readme = (REPO / "README.md").read_text()
    for command in (
        "bash scripts/setup.sh && .venv/bin/python -m prefalign fit --config configs/dpo.yaml",
        'bash scripts/setup.sh && .venv/bin/python -m pytest -m "not slow"',
        "bash scripts/setup.sh && .venv/bin/python -m prefalign fit --config configs/quickstart.yaml",
    ):
        assert f"\n{command}\n" in readme
    assert len(readme.splitlines()) <= 250
