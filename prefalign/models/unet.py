"""A small class-conditional UNet that predicts the noise ε added to a 28x28 image (DDPM's ε-parameterisation)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of timesteps ``t`` [B] (Vaswani et al., 2017, as used by Ho et al., 2020): [B, dim] fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))  # an odd dim gets one zero column rather than a shape error


class ResBlock(nn.Module):
    """GroupNorm→SiLU→Conv3x3, plus a per-channel shift from the embedding, GroupNorm→SiLU→Conv3x3, residual."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ConditionalUNet(nn.Module):
    """Class-conditional ε-prediction UNet for [B, C, 28, 28] images (~0.7M parameters at the defaults).

    One ResBlock per resolution on the way down (28/14/7 for three levels) and one on the way up, with concatenated
    skips. The timestep (sinusoidal → MLP) and class (``nn.Embedding``) embeddings are summed and fed to every block.
    Label ``num_classes`` is the null label: training drops labels to it so that one network also gives the
    unconditional ε that classifier-free guidance needs.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 64),
        num_classes: int = 10,
        time_dim: int = 128,
        groups: int = 8,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        # Plain builtins only: this dict is saved in weights files and compared after a torch.save/load round trip.
        self.init_args = {
            "channels": list(channels),
            "num_classes": num_classes,
            "time_dim": time_dim,
            "groups": groups,
            "in_channels": in_channels,
        }
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.class_emb = nn.Embedding(num_classes + 1, time_dim)  # +1: the null label

        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(ResBlock(prev, c, time_dim, groups))
            prev = c
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(prev, prev, time_dim, groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            self.up.append(ResBlock(prev + c, c, time_dim, groups))
            prev = c
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups, prev)
        self.conv_out = nn.Conv2d(prev, in_channels, 3, padding=1)
        # Zero output: the untrained model predicts ε = 0, a neutral start that keeps early losses at E[ε²] = 1.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_label(self) -> int:
        """The "unconditional" class label used for classifier-free guidance."""
        return self.init_args["num_classes"]

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Predicted noise ε, same shape as ``x``.

        x [B, C, 28, 28] noisy images (scaled to [-1, 1] at t=0), t [B] timesteps (long 0..T-1; floats accepted),
        y [B] long class labels in 0..num_classes (num_classes = null label).
        """
        # SiLU once here rather than in every block: each block's projection then sees the same activated embedding.
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.time_dim)) + self.class_emb(y))
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                # Upsample to the size of the next skip, not blindly x2: 7→14→28 and odd sizes alike line up.
                h = self.upsample[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
