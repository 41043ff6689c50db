"""Copy the latest benchmark report (benchmarks/latest.md, written by scripts/bench.py) into the performance page, and
rewrite the README's model-family table from the saved results.

    python scripts/update_docs.py     # the blocks <!-- bench:begin/end --> and <!-- bench-plain:begin/end --> of
                                      # docs/performance.md and <!-- families:begin/end --> of README.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

REPO = reporting.REPO


#: docs block → the benchmark report it shows (the second: `bench.py --concurrent --pair-with plain --out ...`)
REPORTS = {"bench": "benchmarks/latest.md", "bench-plain": "benchmarks/plain_pair/latest.md"}


def main() -> int:
    for block, name in REPORTS.items():
        path = REPO / name
        if not path.is_file():
            continue
        report = path.read_text().strip()
        body = report.split("\n", 1)[1].strip() if report.startswith("# ") else report  # drop its own title
        reporting.write_block(block, body + f"\n\n(Inserted by `python scripts/update_docs.py` from `{name}`.)", REPO)
    reporting.update_family_table(REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
