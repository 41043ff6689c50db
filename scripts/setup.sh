#!/usr/bin/env bash
# Create .venv (if missing) and install prefalign with its test extras. Safe to re-run.
# The torch pins in constraints.txt are the tested set; set PREFALIGN_CONSTRAINTS= (empty) to let pip choose.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$python_bin" --version 2>&1)"
  "$python_bin" -m venv .venv
fi
constraints=${PREFALIGN_CONSTRAINTS-constraints.txt}
echo "setup: installing prefalign[dev]${constraints:+ (constraints: $constraints)} — the first run downloads/unpacks torch and takes a few minutes"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" ${constraints:+-c "$constraints"}
.venv/bin/python -c "import torch, lightning, prefalign; print(f'setup: ok — torch {torch.__version__}, lightning {lightning.__version__}, prefalign {prefalign.__version__}')"
