#!/usr/bin/env bash
# The figures of docs/inspecting.md ("Inspecting models"), made by the commands documented there.
#
#   scripts/make_figures.sh [POLICY [REFERENCE]]
#
# (a) 1-vs-8 filters: trains configs/binary_1v8.yaml (the 1-vs-8 filter notebook's study, ~40 s on one CPU thread) and copies the learned
#     3×3 filters that its FilterPlot callback wrote to runs/binary_1v8/version_N/images/;
# (b) dreams of the reference artifacts/reference/seed_cnn.pt (trained by configs/sft.yaml if missing): the grid,
#     an animation and hybrids;
# (c) policy vs reference dreams from the same noise. POLICY defaults to the newest runs/dpo/version_*/policy.pt
#     (skipped with a message when there is none); REFERENCE defaults to the reference recorded in the policy's
#     weights file (else artifacts/reference/seed_cnn.pt). The figure is named after the policy's run:
#     runs/seed_dpo/version_0/policy.pt → docs/figures/dreams_compare_seed_dpo.png;
# (d) the L2 sweep (λ = 0.001 … 10, all from the same noise).
#
# Environment: PYTHON (default: python), SKIP_FIT=1 to reuse the newest runs/binary_1v8 run instead of training.
# Full outputs (every grid, confidence plot, GIF) stay under runs/dreams/; docs/figures/ gets the few shown on the page.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
FIG=docs/figures
DREAMS=runs/dreams
REF=artifacts/reference/seed_cnn.pt
# Tiny models: one thread is faster than two on a shared machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$FIG"

newest() { # newest existing match of a glob, by version number
    ls -d $1 2>/dev/null | sort -V | tail -n 1 || true
}

echo "== (a) 1-vs-8 filter study (configs/binary_1v8.yaml)"
if [[ "${SKIP_FIT:-0}" != 1 || -z "$(newest 'runs/binary_1v8/version_*/images/filters_first_conv_step*.png')" ]]; then
    $PY -m prefalign fit --config configs/binary_1v8.yaml
fi
run=$(dirname "$(newest 'runs/binary_1v8/version_*/images/filters_first_conv_step*.png')")
cp "$(newest "$run/filters_first_conv_step*.png")" "$FIG/binary_1v8_filters.png"
echo "   $(dirname "$run")/results_test.json:"
grep '"test/acc_clean"' "$(dirname "$run")/results_test.json" || true

echo "== (b, d) dreams of the reference $REF"
if [[ ! -f "$REF" ]]; then
    echo "   $REF is missing: training it with configs/sft.yaml"
    $PY -m prefalign fit --config configs/sft.yaml
fi
# Plain cross-entropy dreams (λ = 0) and the L2 sweep, all from the same seeded noise.
$PY -m prefalign dream --ckpt "$REF" --out_dir "$DREAMS/reference" --sweep_l2 true --gif_frames 12
cp "$DREAMS/reference/dream_grid.png" "$FIG/dreams_reference.png"
cp "$DREAMS/reference/l2_sweep.png" "$FIG/dreams_l2_sweep.png"
# With a strong L2 penalty (λ = 10): the animation and hybrid targets.
$PY -m prefalign dream --ckpt "$REF" --out_dir "$DREAMS/reference_l2_10" --lambda_l2 10 --gif_frames 12 \
    --hybrid+ 3:0.5,5:0.5 --hybrid+ 1,7 --hybrid+ 4:0.7,9:0.3
cp "$DREAMS/reference_l2_10/dream.gif" "$FIG/dreams_reference_l2_10.gif"
cp "$DREAMS/reference_l2_10/hybrid_grid.png" "$FIG/dreams_hybrids_l2_10.png"

echo "== (c) policy vs reference"
POLICY=${1:-$(newest 'runs/dpo/version_*/policy.pt')}
if [[ -z "$POLICY" ]]; then
    echo "   no policy given and no runs/dpo/version_*/policy.pt yet: skipped."
    echo "   Run it later with: scripts/make_figures.sh runs/dpo/version_0/policy.pt"
elif [[ ! -f "$POLICY" ]]; then
    echo "   $POLICY does not exist" >&2
    exit 1
else
    POLICY_REF=${2:-$($PY -c 'import sys; from prefalign.checkpoint import load_weights
print(load_weights(sys.argv[1]).get("meta", {}).get("reference_ckpt") or "")' "$POLICY")}
    POLICY_REF=${POLICY_REF:-$REF}
    name=$(basename "$(dirname "$(dirname "$POLICY")")")  # runs/<name>/version_N/policy.pt
    $PY -m prefalign dream --ckpt "$POLICY" --compare_ckpt "$POLICY_REF" --lambda_l2 10 --gif_frames 12 \
        --out_dir "$DREAMS/${name}_vs_reference"
    cp "$DREAMS/${name}_vs_reference/compare.png" "$FIG/dreams_compare_${name}.png"
fi

echo "== docs/figures"
ls -l "$FIG"
big=$(find "$FIG" -type f -size +300k)
if [[ -n "$big" ]]; then
    echo "warning: over 300 KB (too big to commit for the docs): $big" >&2
fi
