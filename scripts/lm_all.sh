#!/usr/bin/env bash
# Every language-model run behind the README's LM section, one after another, then the table and figure.
#   bash scripts/lm_all.sh            (about 30 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m prefalign fit --config configs/lm_pretrain.yaml --wandb=false
"$py" -m prefalign fit --config configs/lm_seed_pg.yaml --wandb=false
"$py" -m prefalign fit --config configs/lm_ppo.yaml --wandb=false
"$py" -m prefalign fit --config configs/lm_dpo.yaml --wandb=false
"$py" -m prefalign fit --config configs/lm_dpo.yaml --data.init_args.pair_strategy=spin --trainer.logger.init_args.name=lm_spin --wandb=false
"$py" scripts/lm_results.py
