"""Image corruptions whose noise is a pure function of (seed, sample index, pixel).

The noise for image ``i`` never depends on which other images are loaded, on batch order, on the rank
or on the torch RNG state: every run, every process and every objective sees the same noisy images,
so comparisons between objectives are fair.
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF
_CHUNK = 256  # images per vectorised chunk: the int64/float64 scratch (~2 MB per buffer) stays in cache (3x faster than 4096)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer mixer (the "lowbias32"-style multiply-xorshift); all products fit in int64,
    # so it is exact and identical on every device.
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def _hash32_(x: torch.Tensor) -> torch.Tensor:
    """:func:`_hash32` in place on ``x`` (which the caller owns): the same operations in the same order, so the
    same bits, without a fresh large temporary per operation."""
    for _ in range(2):
        x.bitwise_xor_(x >> 16).mul_(0x45D9F3B).bitwise_and_(_MASK32)
    return x.bitwise_xor_(x >> 16)


def gaussian_noise(indices: torch.Tensor, shape: tuple[int, ...], seed: int, stream: int = 0) -> torch.Tensor:
    """Standard normal noise of ``[len(indices), *shape]``, a deterministic function of (seed, stream, index, pixel).

    Box–Muller over two hashed uniforms per pixel. ``stream`` gives independent draws for the same images
    (prefalign uses the epoch number when the training noise is re-drawn every epoch); stream 0 is the
    fixed noise.
    """
    indices = indices.to(torch.int64).reshape(-1)
    pixels = math.prod(shape)
    pix = torch.arange(pixels, dtype=torch.int64, device=indices.device)
    seed_key = _hash32(torch.tensor(seed & _MASK32, dtype=torch.int64, device=indices.device))
    if stream:
        seed_key = _hash32(
            seed_key ^ _hash32(torch.tensor((stream + 0x9E3779B9) & _MASK32, dtype=torch.int64, device=indices.device))
        )
    out = torch.empty(len(indices), pixels, dtype=torch.float32, device=indices.device)
    pix_keys = (_hash32(2 * pix), _hash32(2 * pix + 1))  # the same for every chunk
    for start in range(0, len(indices), _CHUNK):
        idx = indices[start : start + _CHUNK]
        base = _hash32(seed_key ^ _hash32(idx & _MASK32)).unsqueeze(1)  # [n, 1]
        # u = (hash + 0.5) / 2^32 and z = sqrt(-2 log u1) * cos(2 pi u2), evaluated in place (bit-identical to the
        # out-of-place expressions: the same IEEE operations on the same operands).
        u1 = _hash32_(base ^ pix_keys[0]).double().add_(0.5).div_(2**32)
        u2 = _hash32_(base ^ pix_keys[1]).double().add_(0.5).div_(2**32)
        out[start : start + len(idx)] = u1.log_().mul_(-2.0).sqrt_().mul_(u2.mul_(2.0 * math.pi).cos_())
    return out.reshape(len(indices), *shape)


class Corruption:
    """Base class: ``corrupt(images, indices)`` maps clean images in [0, 1] to corrupted ones in [0, 1]."""

    def corrupt(self, images: torch.Tensor, indices: torch.Tensor, stream: int = 0) -> torch.Tensor:
        """Corrupt ``images``; ``indices`` key the randomness per image, ``stream`` selects an independent draw."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A string that changes whenever the corrupted pixels would: part of the mining cache key."""
        return repr(self)


class GaussianNoise(Corruption):
    """The seed-000 recipe: ``clip(x + factor * N(0, 1), 0, 1)`` with factor 0.5.

    Args:
        factor: standard deviation of the additive noise, in pixel units (images are in [0, 1]).
        seed: noise seed; noise for image ``i`` depends only on (seed, split, i).
    """

    def __init__(self, factor: float = 0.5, seed: int = 0) -> None:
        if factor < 0:
            raise ValueError(f"GaussianNoise.factor must be >= 0, got {factor}")
        self.factor = float(factor)
        self.seed = int(seed)

    def corrupt(self, images: torch.Tensor, indices: torch.Tensor, stream: int = 0) -> torch.Tensor:
        noise = gaussian_noise(indices, tuple(images.shape[1:]), self.seed, stream).to(images.device)
        if noise.dtype != images.dtype:
            return (images + self.factor * noise).clamp_(0.0, 1.0)
        # In place on the fresh noise buffer (no two extra image-sized temporaries); addition commutes exactly.
        return noise.mul_(self.factor).add_(images).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return f"GaussianNoise(factor={self.factor}, seed={self.seed})"


class NoCorruption(Corruption):
    """Identity: the 'noisy' images are the clean ones (useful for ablations and the 1-vs-8 study)."""

    def corrupt(self, images: torch.Tensor, indices: torch.Tensor, stream: int = 0) -> torch.Tensor:
        return images.clone()

    def __repr__(self) -> str:
        return "NoCorruption()"
