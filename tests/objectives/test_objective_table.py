"""The objective table of docs/objectives.md is generated from the classes and must be current."""

import importlib.util

from tests.conftest import REPO


def test_docs_objective_table_is_current():
    spec = importlib.util.spec_from_file_location("objective_table", REPO / "scripts/objective_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--check"]) == 0, "run python scripts/objective_table.py"
    text = (REPO / "docs" / "objectives.md").read_text()
    for name in (
        "EXO",
        "NCA",
        "BCO",
        "SPPO",
        "AOT",
        "AOTPair",
        "APOZero",
        "APODown",
        "DiscoPOP",
        "CPO",
        "FDivergence",
        "WPO",
        "WeightedSum",
        "ReferenceFree",
    ):
        assert f"| `{name}` |" in text
