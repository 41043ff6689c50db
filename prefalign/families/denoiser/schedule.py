"""The DDPM noise schedule: ᾱ_t for each timestep, noising x_0 to x_t, and the timesteps DDIM visits."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor


class NoiseSchedule:
    """DDPM forward process (Ho et al., 2020, arXiv:2006.11239): q(x_t|x_0) = N(sqrt(ᾱ_t) x_0, (1-ᾱ_t) I).

    ``kind="linear"`` spaces β_t linearly from ``beta_start`` to ``beta_end``; ``kind="cosine"`` is Nichol & Dhariwal
    (2021, arXiv:2102.09672) with s = 0.008 and β_t clipped to 0.999. Timesteps are 0-based: t = 0 is the least noisy.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        kind: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be ≥ 1, got {num_timesteps}")
        if kind not in ("linear", "cosine"):
            raise ValueError(f"unknown noise schedule kind {kind!r}; expected 'linear' or 'cosine'")
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
        self.num_timesteps = num_timesteps
        self.kind = kind
        # Build in float64 and round once at the end: a float32 cumprod over 1000 steps drifts visibly.
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        else:
            s = 0.008
            steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)  # the clip keeps ᾱ from hitting 0 at t = T-1
        self.betas = betas.float()
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()
        self._by_device: dict[torch.device, Tensor] = {torch.device("cpu"): self.alphas_cumprod}

    def alphas_cumprod_on(self, device: torch.device | str) -> Tensor:
        """``alphas_cumprod`` on ``device``, copied once per device rather than on every call."""
        device = torch.device(device)
        if device not in self._by_device:
            self._by_device[device] = self.alphas_cumprod.to(device)
        return self._by_device[device]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·noise for x0, noise [B, ...] and t [B] long; returned in x0's dtype."""
        a = self.alphas_cumprod_on(x0.device)[t.to(x0.device)]
        a = a.view(-1, *([1] * (x0.dim() - 1)))  # one ᾱ per sample, broadcast over the image dims
        return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(x0.dtype)

    def sample_timesteps(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        low: int = 0,
        high: int | None = None,
    ) -> Tensor:
        """``n`` timesteps drawn uniformly from [``low``, ``high``) (default [0, T)) as a long tensor on ``device``."""
        high = self.num_timesteps if high is None else high
        if not 0 <= low < high <= self.num_timesteps:
            raise ValueError(f"need 0 <= low < high <= num_timesteps={self.num_timesteps}, got low={low}, high={high}")
        # Draw on the generator's own device (randint refuses a mismatch), then move: same seed, same timesteps.
        draw_device = generator.device if generator is not None else device
        t = torch.randint(low, high, (n,), generator=generator, device=draw_device)
        return t.to(device) if device is not None else t

    def ddim_timesteps(self, steps: int) -> Tensor:
        """The ``steps`` timesteps DDIM visits, descending (long), with "trailing" spacing (Lin et al., 2023,
        arXiv:2305.08891, Table 2): round(arange(T, 0, -T/steps)) - 1, so the first is always T-1 (pure noise)."""
        T = self.num_timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in [1, num_timesteps={T}], got {steps}")
        # The grid is T·(steps - i)/steps. Integer arithmetic rounds it exactly (half to even, like np.round): the
        # float np.arange in diffusers can mis-round exact .5 ties and, for steps near T, even emit one extra step.
        num = T * (steps - torch.arange(steps))
        q, r = num // steps, num % steps
        round_up = (2 * r > steps) | ((2 * r == steps) & (q % 2 == 1))
        return q + round_up.long() - 1
