#!/usr/bin/env bash
# Every language-model run behind the table of docs/families/language.md, one after another, then the table and figure.
#   bash scripts/lm_all.sh            (about 25 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
fit() { "$py" -m prefalign fit --wandb=false "$@"; }
fit --config configs/lm_pretrain.yaml
fit --config configs/lm_seed_pg.yaml
fit --config configs/lm_seed_pg.yaml --model.optimizer.init_args.lr=0.001 --trainer.logger.init_args.name=lm_seed_pg_lr1e-3
fit --config configs/lm_ppo.yaml
plain_dpo=(--model.objective=prefalign.objectives.DPO --model.objective.init_args.beta=0.1 --model.optimizer.init_args.lr=0.0001)
fit --config configs/lm_dpo.yaml "${plain_dpo[@]}" --trainer.logger.init_args.name=lm_dpo_plain
fit --config configs/lm_dpo.yaml
fit --config configs/lm_dpo.yaml --data.init_args.pair_strategy=spin "${plain_dpo[@]}" --trainer.logger.init_args.name=lm_spin_plain
fit --config configs/lm_dpo.yaml --data.init_args.pair_strategy=spin --trainer.logger.init_args.name=lm_spin
"$py" scripts/lm_results.py
