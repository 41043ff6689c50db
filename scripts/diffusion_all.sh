#!/usr/bin/env bash
# Every Diffusion-DPO run behind the table of docs/families/diffusion.md, one after another, then the table and the sample grid.
#   bash scripts/diffusion_all.sh       (about 50 minutes on a 2-core CPU: the reference, then four alignment runs)
# The reference is trained first (configs/diffusion_pretrain.yaml, timed on its own); the first alignment run mines the
# pairs, the others read them from the cache, and scripts/diffusion_results.py adds the mining time back for the bar.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
fit() { "$py" -m prefalign fit --wandb=false "$@"; }
if [ ! -f artifacts/reference/denoiser.pt ]; then fit --config configs/diffusion_pretrain.yaml; fi
fit --config configs/diffusion_dpo.yaml
# The other rows: plain DPO at two β for 700 steps (no denoising anchor), and the shipped recipe with LoRA adapters.
short=(--trainer.max_steps=700)
dpo=(--model.objective=prefalign.objectives.DPO)
fit --config configs/diffusion_dpo.yaml "${short[@]}" "${dpo[@]}" --model.objective.init_args.beta=5000 --trainer.logger.init_args.name=diffusion_dpo_b5000
fit --config configs/diffusion_dpo.yaml "${short[@]}" "${dpo[@]}" --model.objective.init_args.beta=2000 --trainer.logger.init_args.name=diffusion_dpo_b2000
fit --config configs/diffusion_dpo.yaml --config configs/model/lora.yaml --trainer.logger.init_args.name=diffusion_dpo_lora
"$py" scripts/diffusion_results.py
