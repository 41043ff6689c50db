"""Copy the latest benchmark report (benchmarks/latest.md, written by scripts/bench.py) into the performance page, and
rewrite the README's model-family table from the saved results.

    python scripts/update_docs.py     # the blocks <!-- bench:begin/end --> of docs/performance.md and <!-- families:begin/end --> of README.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO


def main() -> int:
    report = (REPO / "benchmarks" / "latest.md").read_text().strip()
    body = report.split("\n", 1)[1].strip() if report.startswith("# ") else report  # drop its own title
    reporting.write_block(
        "bench", body + "\n\n(Inserted by `python scripts/update_docs.py` from `benchmarks/latest.md`.)", REPO
    )
    reporting.update_family_table(REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
