"""Copy the latest benchmark report (benchmarks/latest.md, written by scripts/bench.py) into README.md.

    python scripts/update_readme.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_objectives import REPO, replace_between_markers  # noqa: E402

if __name__ == "__main__":
    report = (REPO / "benchmarks" / "latest.md").read_text().strip()
    body = report.split("\n", 1)[1].strip() if report.startswith("# ") else report  # drop its own title
    replace_between_markers(REPO / "README.md", body + "\n\n(Inserted by `python scripts/update_readme.py` from `benchmarks/latest.md`.)", "bench")
