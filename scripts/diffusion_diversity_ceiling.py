"""How much diversity can a Diffusion-DPO policy keep at a given error? The bar's diversity criterion, measured.

    python scripts/diffusion_diversity_ceiling.py --seeds 0 1 2                 # the references alone
    python scripts/diffusion_diversity_ceiling.py --seeds 2 --runs diffusion_dpo  # and policies (several names: each)

For each seed's reference (artifacts/reference/denoiser_seedS.pt, as scripts/diffusion_seeds.py exports it) and each
noise (the validation noise, eval_seed 1234, and the held-out noise, 4321), it draws 100 samples per class as the
family's test stage does (DDIM, 25 steps, bf16 autocast when the CPU has bf16 kernels, else fp32) and scores them with
the evaluation judge (LeNet, seed 2). It prints:

* the reference's error and diversity, and its diversity over the samples the judge reads as right;
* the *ceiling*: the diversity ÷ the reference's of a policy that turns the other (1 − kept) of each class's wrong
  samples into right ones drawn from the reference's own right samples (no change of style at all), for kept = 0.45
  (the issue's margin), 0.3 and 0 (:func:`diversity_if_errors_fixed`). A real policy scores below it by what it
  changes in the styles of its right samples;
* with ``--runs NAME ...``: each policy (runs/NAME_seedS/version_*/policy.pt) on the same noise: its error and
  diversity ÷ the reference's, how many wrong samples it fixed and broke, and its *style retention*: diversity over
  the samples both models get right, policy ÷ reference (:func:`style_retention`).
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prefalign.families.denoiser.metrics import within_class_diversity  # noqa: E402


def diversity_if_errors_fixed(features: Tensor, labels: Tensor, correct: Tensor, kept: float) -> float:
    """Expected within-class diversity (:func:`within_class_diversity`) of the same number of samples per class when
    only a fraction ``kept`` of each class's wrong samples stays wrong and the others become right samples drawn from
    the class's right samples (so the right samples' styles are unchanged). Per class, with C right and W wrong of N,
    mean pairwise distances d_rr, d_rw, d_ww, and C' = N − kept·W, W' = kept·W:

        (C'(C' − 1)·d_rr + 2·C'·W'·d_rw + W'(W' − 1)·d_ww) / (N(N − 1))

    ``kept`` = 1 gives :func:`within_class_diversity` itself. Classes with fewer than two samples are skipped."""
    per_class = []
    for c in labels.unique():
        f, ok = features[labels == c].double(), correct[labels == c]
        n, wrong = len(f), int((~ok).sum())
        if n < 2:
            continue
        d = torch.cdist(f, f)
        right = n - wrong

        def mean_distance(a: Tensor, b: Tensor, pairs: int) -> Tensor:
            return d[a][:, b].sum() / pairs if pairs > 0 else d.new_zeros(())

        d_rr = mean_distance(ok, ok, right * (right - 1))
        d_rw = mean_distance(ok, ~ok, right * wrong)
        d_ww = mean_distance(~ok, ~ok, wrong * (wrong - 1))
        w = kept * wrong
        r = n - w
        per_class.append((r * (r - 1) * d_rr + 2 * r * w * d_rw + w * max(w - 1, 0.0) * d_ww) / (n * (n - 1)))
    if not per_class:
        raise ValueError("diversity needs at least two samples of some class")
    return float(torch.stack(per_class).mean())


def style_retention(policy: Tensor, reference: Tensor, labels: Tensor, both_right: Tensor) -> float:
    """Within-class diversity of the policy's samples ÷ the reference's, over the samples (same starting noise) that
    both get right: how much of the reference's variety of right digits the policy kept."""
    return within_class_diversity(policy[both_right], labels[both_right]) / within_class_diversity(
        reference[both_right], labels[both_right]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--noise", type=int, nargs="+", default=[1234, 4321], help="eval seeds of the starting noise")
    p.add_argument(
        "--runs", nargs="*", default=[], help="alignment run names, as given to scripts/diffusion_seeds.py --name"
    )
    p.add_argument("--per-class", type=int, default=100)
    a = p.parse_args()

    from prefalign.checkpoint import load_weights
    from prefalign.families.denoiser.judge import judge_scores
    from prefalign.families.denoiser.sampling import ddim_sample, initial_noise, per_class_labels
    from prefalign.families.denoiser.schedule import NoiseSchedule
    from prefalign.models.loading import load_model
    from prefalign.precision import cpu_has_bf16_kernels

    bf16 = cpu_has_bf16_kernels()
    judges = glob.glob(str(REPO / "artifacts/judges/judge-lenet-seed2-*.pt"))
    if not judges:
        sys.exit("no evaluation judge in artifacts/judges: run scripts/diffusion_seeds.py (or any diffusion fit) first")
    judge = load_model(judges[0]).eval()
    print(f"bf16 autocast: {bf16}; judge {Path(judges[0]).name}; {a.per_class} samples per class")
    for seed in a.seeds:
        path = REPO / f"artifacts/reference/denoiser_seed{seed}.pt"
        if not path.is_file():
            sys.exit(f"{path} is missing: python scripts/diffusion_seeds.py --seeds {seed} exports it")
        schedule = NoiseSchedule(**load_weights(path)["meta"]["noise_schedule"])
        models = {"reference": load_model(path).eval()}
        for run in a.runs:
            policies = sorted(glob.glob(str(REPO / f"runs/{run}_seed{seed}/version_*/policy.pt")))
            if not policies:
                sys.exit(f"no runs/{run}_seed{seed}/version_*/policy.pt: finish that alignment run first")
            models[run] = load_model(policies[-1]).eval()
        for noise_seed in a.noise:
            labels = per_class_labels(a.per_class, 10)
            noise = initial_noise(len(labels), noise_seed)
            scored = {}
            for name, model in models.items():
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    images = (ddim_sample(model, schedule, labels, noise, 25) + 1) / 2
                s = judge_scores(judge, images)
                scored[name] = (s.correct(labels), s.features.double())
            ok, feats = scored["reference"]
            div = within_class_diversity(feats, labels)
            right_only = within_class_diversity(feats[ok], labels[ok])
            error = 1 - ok.double().mean().item()
            ceiling = ", ".join(
                f"kept {k}: {diversity_if_errors_fixed(feats, labels, ok, k) / div:.3f}" for k in (0.45, 0.3, 0.0)
            )
            print(
                f"seed {seed}, noise {noise_seed}: reference error {error:.3f}, diversity {div:.2f}, right samples only "
                f"{right_only:.2f} ({right_only / div:.3f} of it); ceiling (diversity ÷ ref when the rest of the "
                f"wrong samples become right ones of the reference's styles): {ceiling}"
            )
            for run in a.runs:
                pok, pfeats = scored[run]
                print(
                    f"  {run}: error ÷ ref {(1 - pok.double().mean().item()) / error:.3f}, diversity ÷ ref "
                    f"{within_class_diversity(pfeats, labels) / div:.3f}; fixed {int((~ok & pok).sum())}, broke "
                    f"{int((ok & ~pok).sum())} of {len(labels)}; style retention (both right) "
                    f"{style_retention(pfeats, feats, labels, ok & pok):.3f}"
                )


if __name__ == "__main__":
    main()
