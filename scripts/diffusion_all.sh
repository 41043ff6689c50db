#!/usr/bin/env bash
# Every Diffusion-DPO run behind the README's table, one after another, then the table and the sample grid.
#   bash scripts/diffusion_all.sh       (about 100 minutes on a 2-core CPU: the reference, then six alignment runs)
# The reference is trained first (configs/diffusion_pretrain.yaml, timed on its own); the first alignment run mines the
# pairs, the others read them from the cache, and scripts/diffusion_results.py adds the mining time back for the bar.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
fit() { "$py" -m prefalign fit --wandb=false "$@"; }
if [ ! -f artifacts/reference/denoiser.pt ]; then fit --config configs/diffusion_pretrain.yaml; fi
fit --config configs/diffusion_dpo.yaml
# The other rows: 700 steps each for DPO and for RPO with α = β (whole policy and LoRA), then RPO with α = β/4.
short=(--trainer.max_steps=700)
dpo=(--model.objective=prefalign.objectives.DPO)
alpha_beta=(--model.objective.init_args.alpha=5000)
fit --config configs/diffusion_dpo.yaml "${short[@]}" "${dpo[@]}" --model.objective.init_args.beta=5000 --trainer.logger.init_args.name=diffusion_dpo_b5000
fit --config configs/diffusion_dpo.yaml "${short[@]}" "${dpo[@]}" --model.objective.init_args.beta=2000 --trainer.logger.init_args.name=diffusion_dpo_b2000
fit --config configs/diffusion_dpo.yaml "${short[@]}" "${alpha_beta[@]}" --trainer.logger.init_args.name=diffusion_rpo_700
fit --config configs/diffusion_dpo.yaml --config configs/model/lora.yaml "${short[@]}" "${alpha_beta[@]}" --trainer.logger.init_args.name=diffusion_dpo_lora
fit --config configs/diffusion_dpo.yaml --model.objective.init_args.alpha=1250 --trainer.logger.init_args.name=diffusion_rpo_a4
"$py" scripts/diffusion_results.py
