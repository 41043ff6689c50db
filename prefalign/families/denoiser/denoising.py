"""What the denoiser family's training and evaluation both compute: the log-likelihood surrogate and the null class.

Kept apart from :mod:`~prefalign.families.denoiser.family` so that the evaluation (its base class) and the mining
code can use them without importing the family.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from prefalign.families.base import Forward


def to_model_range(images01: Tensor) -> Tensor:
    """Images are stored in [0, 1] like every other image in prefalign; the denoiser works in [-1, 1]."""
    return images01.float() * 2 - 1


def denoising_logp(model: Forward, x_t: Tensor, t: Tensor, labels: Tensor, noise: Tensor) -> Tensor:
    """The denoiser's log-likelihood surrogate, ``−½ · mean over pixels of ‖ε − ε_θ(x_t, t, c)‖²``, fp32 ``[B]``.

    The ELBO of a diffusion model is (up to weighting and constants) a sum of such terms, so a higher value means a
    likelier image: Diffusion-DPO (Wallace et al., 2023, arXiv:2311.12908, Eq. 14) puts it where DPO has log π.
    """
    eps = model(x_t, t, labels).float()
    return -0.5 * (noise.float() - eps).square().flatten(1).mean(1)


def null_label_of(model: Any) -> int:
    """The null (unconditional) class of a denoiser, also through wrappers (a compiled module, LoRA)."""
    for candidate in (model, getattr(model, "_orig_mod", None), getattr(model, "base", None)):
        value = getattr(candidate, "null_label", None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"the denoiser family needs a class-conditional denoiser such as prefalign.models.ConditionalUNet "
        f"(model(x_t, t, y) -> ε, with a null_label), got {type(model).__name__}; set model.backbone."
    )
