"""``python -m prefalign dream``: network dreams of a saved weights file, written as PNGs and GIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from prefalign.commands import resolve_device, run_command
from prefalign.models.loading import load_model
from prefalign.output_paths import check_outputs
from prefalign.viz.dream_outputs import comparison_figure, dream_titles, save_dream_outputs, sweep_figure
from prefalign.viz.dreams import DEFAULT_L2_VALUES, DreamResult, dream, hybrid_targets, initial_noise
from prefalign.viz.images import save_figure


def _num_classes(model: nn.Module) -> int:
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, 1, 28, 28, device=next(model.parameters()).device)).shape[-1])


def planned_outputs(
    out_dir: str, sweep_l2: bool, l2_values: list[float], hybrid: list[str], compare_ckpt: str | None
) -> dict[str, Path]:
    """Every file a dream run may write (the names :func:`save_dream_outputs` gives), by the setting that causes it."""
    out = Path(out_dir)
    prefixes = {"--out_dir": "dream"}
    if sweep_l2:
        prefixes.update({f"--l2_values {lam!r}": f"l2_{lam:g}" for lam in l2_values})
    if hybrid:
        prefixes["--hybrid"] = "hybrid"
    if compare_ckpt is not None:
        prefixes["--compare_ckpt"] = "reference"
    files = {
        f"{setting} ({prefix}{suffix})": out / f"{prefix}{suffix}"
        for setting, prefix in prefixes.items()
        for suffix in ("_grid.png", "_confidence.png", ".gif", ".mp4")
    }  # .mp4 only with ffmpeg: checked anyway
    if sweep_l2:
        files["--sweep_l2 (l2_sweep.png)"] = out / "l2_sweep.png"
    if compare_ckpt is not None:
        files["--compare_ckpt (compare.png)"] = out / "compare.png"
    return files


def _summary(label: str, result: DreamResult) -> str:
    return f"{label}: " + ", ".join(dream_titles(result))


def dream_command(
    ckpt: str,
    out_dir: str = "runs/dreams",
    targets: list[int] | None = None,
    steps: int = 200,
    lr: float = 0.1,
    optimizer: Literal["adam", "sgd"] = "adam",
    clamp_min: float | None = 0.0,
    clamp_max: float | None = 1.0,
    lambda_l2: float = 0.0,
    sweep_l2: bool = False,
    l2_values: list[float] = list(DEFAULT_L2_VALUES),  # never mutated: safe as a default
    hybrid: list[str] = [],  # noqa: B006 - never mutated; a list default reads better in --help
    compare_ckpt: str | None = None,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    record_every: int = 1,
    gif_frames: int = 60,
    device: str = "cpu",
) -> list[str]:
    """Dream inputs that a trained classifier assigns to chosen classes, starting from seeded noise.

    Writes, for every dream, ``<prefix>_grid.png`` (final images with target confidence),
    ``<prefix>_confidence.png`` (confidence over steps) and ``<prefix>.gif`` (plus ``.mp4`` if ffmpeg is installed).

    Args:
        ckpt: Weights file of the classifier to dream with (a prefalign weights file, e.g. the SFT export).
        out_dir: Folder for the images and animations (created if needed; checked for writing before any work, and
            no file written there may be an input).
        targets: Class ids to dream, one image each; default: every class of the model (0..C-1).
        steps: Optimisation steps per dream.
        lr: Learning rate of the input optimiser.
        optimizer: "adam" (as in the network-dreams notebook) or "sgd".
        clamp_min: Lowest pixel value after every step (pixels are in [0, 1]); null for no lower bound.
        clamp_max: Highest pixel value after every step; null for no upper bound.
        lambda_l2: Weight of the L2 penalty lambda * x.pow(2).mean() on the dreamed pixels.
        sweep_l2: Also dream once per value of l2_values, all from the same noise (files l2_<value>_*).
        l2_values: L2 coefficients of the sweep (an exponential progression).
        hybrid: Hybrid dreams, one spec each: "3:0.5,5:0.5" (class:weight, weights sum to 1) or "3,5" (equal
            split). Repeat --hybrid+ 3:0.5,5:0.5 --hybrid+ 1,7 or give a JSON list '["3:0.5,5:0.5"]'. Files hybrid_*.
        compare_ckpt: A reference weights file (e.g. the SFT model a DPO policy started from): its dreams from the
            same noise go to reference_*, and compare.png shows policy (top) vs reference (bottom).
        seed: Seed of the starting noise (same seed, same dreams).
        init_mean: Mean of the starting Gaussian noise.
        init_std: Standard deviation of the starting Gaussian noise.
        record_every: Record a frame every this many steps.
        gif_frames: At most this many frames per animation (evenly subsampled).
        device: "cpu", "cuda", "cuda:1", ... or "auto" (cuda when available).

    Returns:
        The paths of every file written.
    """
    device = resolve_device(device)
    if Path(out_dir).is_file():
        raise ValueError(f"--out_dir {out_dir} is a file; give a folder (it is created if needed).")
    check_outputs(
        planned_outputs(out_dir, sweep_l2, l2_values, hybrid, compare_ckpt),
        {"--ckpt": ckpt, "--compare_ckpt": compare_ckpt},
    )
    model = load_model(ckpt).to(device)
    # Both files before any work: a refused reference must not cost a finished dream.
    reference = load_model(compare_ckpt).to(device) if compare_ckpt is not None else None
    num_classes = _num_classes(model)
    targets = list(range(num_classes)) if targets is None else list(targets)
    bad = [t for t in targets if not 0 <= t < num_classes]
    if bad:
        raise ValueError(f"--targets {bad} out of range: {ckpt} has {num_classes} classes (valid 0..{num_classes - 1})")
    if not targets:
        raise ValueError("--targets is empty; give at least one class id")
    if reference is not None and _num_classes(reference) != num_classes:
        raise ValueError(
            f"--compare_ckpt {compare_ckpt} has {_num_classes(reference)} classes but {ckpt} has {num_classes}; compare models of the same task."
        )
    clamp = None if clamp_min is None and clamp_max is None else (clamp_min, clamp_max)
    common = dict(steps=steps, lr=lr, optimizer=optimizer, clamp=clamp, record_every=record_every)
    out = Path(out_dir)
    tgt = torch.tensor(targets, dtype=torch.long)
    # One starting batch for the main dream, the sweep and the reference, so all of them are comparable.
    x0 = initial_noise(len(targets), seed, init_mean, init_std, clamp)
    written: list[Path] = []
    lines: list[str] = []

    main_result = dream(model, tgt, lambda_l2=lambda_l2, init=x0, **common)
    written += save_dream_outputs(main_result, out, "dream", max_frames=gif_frames)
    lines.append(_summary(f"dream (λ={lambda_l2:g})", main_result))

    if sweep_l2:
        sweep = {lam: dream(model, tgt, lambda_l2=lam, init=x0, **common) for lam in l2_values}
        for lam, res in sweep.items():
            written += save_dream_outputs(res, out, f"l2_{lam:g}", max_frames=gif_frames)
            lines.append(_summary(f"l2 {lam:g}", res))
        written.append(save_figure(sweep_figure(sweep), out / "l2_sweep.png"))

    if hybrid:
        soft = hybrid_targets(hybrid, num_classes)
        x0_h = initial_noise(len(soft), seed, init_mean, init_std, clamp)
        res = dream(model, soft, lambda_l2=lambda_l2, init=x0_h, **common)
        written += save_dream_outputs(res, out, "hybrid", max_frames=gif_frames)
        lines.append(_summary("hybrid", res))

    if reference is not None:
        ref_result = dream(reference, tgt, lambda_l2=lambda_l2, init=x0, **common)
        written += save_dream_outputs(ref_result, out, "reference", max_frames=gif_frames)
        written.append(save_figure(comparison_figure(main_result, ref_result), out / "compare.png"))
        lines.append(_summary("reference", ref_result))

    print(f"dreams of {ckpt} ({steps} steps, final target confidence):")
    for line in lines:
        print("  " + line)
    print(f"wrote {len(written)} files to {out}")
    return [str(p) for p in written]


def main(argv: list[str] | None = None) -> int:
    """Run :func:`dream_command` from command-line arguments; returns the process exit code.

    A missing/corrupt weights file, an invalid option or an unwritable ``--out_dir`` prints one clear line to stderr
    and returns 2 (bad input, as every prefalign subcommand).
    """
    return run_command("dream", dream_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
