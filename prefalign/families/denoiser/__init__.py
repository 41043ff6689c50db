"""The denoiser family (the Diffusion-DPO notebook): a response is an image; its log-likelihood surrogate a denoising error."""

from prefalign.families.denoiser.denoising import denoising_logp
from prefalign.families.denoiser.family import DenoiserFamily

__all__ = ["DenoiserFamily", "denoising_logp"]
