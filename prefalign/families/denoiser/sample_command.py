"""``python -m prefalign sample``: draw digits from a denoiser weights file, as a tensor file and a PNG grid."""

from __future__ import annotations

from pathlib import Path

import torch

from prefalign.checkpoint import CheckpointError, atomic_save, load_weights
from prefalign.commands import resolve_device, run_command
from prefalign.models.loading import build_model
from prefalign.output_paths import OutputPathError, check_outputs


def sample_grid_png(images: torch.Tensor, per_class: int, path: str | Path) -> Path:
    """Write ``images [N·10, 1, 28, 28]`` (uint8, class-major) as one PNG: a row per class, ``per_class`` columns."""
    from matplotlib.image import imsave

    from prefalign.families.denoiser.sampling import tile

    grid = tile(images[:, 0].view(len(images) // per_class, per_class, *images.shape[2:]))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        imsave(tmp, grid.numpy(), cmap="gray", vmin=0, vmax=255)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def grid_path(out: str | Path) -> Path:
    """Where the PNG grid of ``--out`` goes: beside it, the same name with ``.png``."""
    return Path(out).with_suffix(".png")


def sample_command(
    ckpt: str,
    out: str,
    per_class: int = 10,
    steps: int = 25,
    seed: int = 0,
    guidance: float = 1.0,
    classes: list[int] | None = None,
    batch_size: int = 500,
    device: str = "cpu",
) -> int:
    """Draw ``per_class`` digits of every class from a denoiser weights file with deterministic DDIM.

    Writes ``{"images": uint8 [N, 1, 28, 28], "labels": int64 [N]}`` to ``out`` (load it with
    ``torch.load(out, weights_only=True)``) and a PNG grid beside it (``out`` with ``.png``, so ``out`` itself may not
    end in ``.png``). The same seed gives the same images; a policy and its reference sampled with the same seed start from the
    same noise, so their grids compare image by image.

    Args:
        ckpt: a denoiser weights file (e.g. artifacts/reference/denoiser.pt or runs/.../policy.pt).
        out: the tensor file to write, e.g. samples.pt; the PNG grid goes beside it as samples.png (so --out must
            not end in .png, be a folder, or be an input; checked before the model is loaded).
        per_class: samples per class.
        steps: DDIM steps.
        seed: seed of the starting noise.
        guidance: classifier-free guidance scale (1: none; needs a model trained with label dropout).
        classes: only these classes (default: all the model knows).
        batch_size: samples denoised at once (memory bound; the images do not depend on it).
        device: where the model runs: cpu, cuda, cuda:<index> or auto (cuda when available).
    """
    from prefalign.families.denoiser.denoising import null_label_of
    from prefalign.families.denoiser.sampling import ddim_sample, initial_noise
    from prefalign.families.denoiser.schedule import NoiseSchedule

    for name, value in (("per_class", per_class), ("steps", steps), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"--{name}={value} must be ≥ 1.")
    if guidance < 0:
        raise ValueError(f"--guidance={guidance} must be ≥ 0 (1 disables guidance).")
    device = resolve_device(device)
    if Path(out).suffix.lower() == ".png":
        raise OutputPathError(
            f"--out {out}: sample writes a tensor file to --out and its PNG grid beside it with .png, so --out "
            f"cannot be a .png; give the tensor file's name, e.g. --out {Path(out).with_suffix('.pt')}."
        )
    check_outputs({"--out": out, "--out's PNG grid": grid_path(out)}, {"--ckpt": ckpt})
    payload = load_weights(ckpt)
    schedule_args = payload["meta"].get("noise_schedule")
    if schedule_args is None:
        raise CheckpointError(
            f"{ckpt} holds a {payload['class_path']}, not a trained denoiser (it records no noise schedule): give a "
            "weights file written by a diffusion config (e.g. artifacts/reference/denoiser.pt from configs/diffusion_pretrain.yaml)."
        )
    model = build_model(payload, f"weights file {ckpt}").to(device).eval()
    num_classes = null_label_of(model)
    classes = list(range(num_classes)) if classes is None else list(classes)
    unknown = [c for c in classes if not 0 <= c < num_classes]
    if unknown or not classes:
        raise ValueError(f"--classes {classes}: the model knows classes 0..{num_classes - 1}.")
    labels = torch.tensor(classes).repeat_interleave(per_class)
    noise = initial_noise(len(labels), seed)
    images = ddim_sample(
        model,
        NoiseSchedule(**schedule_args),
        labels.to(device),
        noise.to(device),
        steps,
        guidance,
        num_classes,
        batch_size=batch_size,
    )
    images = ((images.cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    atomic_save({"images": images, "labels": labels.to(torch.int64)}, out)
    png = sample_grid_png(images, per_class, grid_path(out))
    print(f"wrote {len(labels)} samples to {out} and a grid to {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("sample", sample_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
