"""Deterministic DDIM sampling (η = 0) with optional classifier-free guidance, plus seeded x_T and label helpers."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from prefalign.families.denoiser.schedule import NoiseSchedule


def initial_noise(n: int, seed: int, shape: tuple[int, ...] = (1, 28, 28)) -> Tensor:
    """x_T [n, *shape] for n samples from a CPU torch.Generator seeded with ``seed`` (the same seed gives the same
    noise on every machine/device; callers ``.to(device)``)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn((n, *shape), generator=generator)


def tile(grid: Tensor) -> Tensor:
    """One image from a grid of images ``[rows, cols, H, W]``: ``[rows·H, cols·W]``, row by row."""
    rows, cols, h, w = grid.shape
    return grid.permute(0, 2, 1, 3).reshape(rows * h, cols * w)


def per_class_labels(per_class: int, num_classes: int = 10) -> Tensor:
    """Long labels [0]*per_class + [1]*per_class + ... + [num_classes-1]*per_class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def _predict_eps(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    t: Tensor,
    labels: Tensor,
    guidance: float,
    null_label: int | None,
) -> Tensor:
    """ε for one step in fp32; with guidance, the conditional and unconditional passes share one batched forward."""
    if guidance == 1.0:
        return model(x, t, labels).float()
    null = torch.full_like(labels, null_label)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float()
    cond, uncond = eps.chunk(2)
    return uncond + guidance * (cond - uncond)


def _ddim_chunk(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    alphas_cumprod: Tensor,
    timesteps: list[int],
    labels: Tensor,
    noise: Tensor,
    guidance: float,
    null_label: int | None,
    clip: bool,
) -> Tensor:
    """Run every DDIM step on one chunk of samples."""
    x = noise.float()  # x_t stays fp32 even when the model runs under bf16 autocast
    for i, t in enumerate(timesteps):
        a_t = alphas_cumprod[t]
        # ᾱ_prev = 1 after the last step (diffusers' set_alpha_to_one), so the final update returns x0_pred itself.
        a_prev = alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones_like(a_t)
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        eps = _predict_eps(model, x, t_batch, labels, guidance, null_label)
        x0_pred = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0_pred = x0_pred.clamp(-1, 1)
        x = a_prev.sqrt() * x0_pred + (1 - a_prev).sqrt() * eps
    return x.clamp(-1, 1)


@torch.no_grad()
def ddim_sample(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    labels: Tensor,
    noise: Tensor,
    steps: int = 25,
    guidance: float = 1.0,
    null_label: int | None = None,
    clip: bool = True,
    batch_size: int | None = 512,
) -> Tensor:
    """DDIM (Song et al., 2021, arXiv:2010.02502) with η = 0: deterministic given ``noise``.

    Returns x_0 samples [N, C, H, W] float32 clamped to [-1, 1]. ``model(x_t, t, y)`` predicts ε; ``labels`` [N] long,
    ``noise`` [N, C, H, W] is x_T. ``guidance`` = w (diffusers' convention): ε = ε_uncond + w·(ε_cond − ε_uncond);
    w == 1 is plain conditional sampling (one forward per step, no null-label pass); any other w needs ``null_label``.
    ``clip`` clamps each step's x0 prediction to [-1, 1]. Samples run in chunks of ``batch_size`` rows (None = all at
    once) to bound memory; the chunks are independent, so the result does not depend on the chunk size.
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1 (one DDIM step is a single x0 prediction from x_T), got {steps}")
    if len(labels) != len(noise):
        raise ValueError(f"need one label per noise sample, got {len(labels)} labels for {len(noise)} samples")
    if guidance != 1.0 and null_label is None:
        raise ValueError(f"guidance={guidance} needs null_label (the unconditional class); w = 1 needs none")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1 or None, got {batch_size}")
    timesteps = schedule.ddim_timesteps(steps).tolist()
    alphas_cumprod = schedule.alphas_cumprod_on(noise.device)
    labels = labels.to(noise.device)
    n = len(noise)
    chunk = batch_size or max(n, 1)
    outputs = [
        _ddim_chunk(
            model, alphas_cumprod, timesteps, labels[i : i + chunk], noise[i : i + chunk], guidance, null_label, clip
        )
        for i in range(0, n, chunk)
    ]
    return torch.cat(outputs) if outputs else noise.float().clone()
