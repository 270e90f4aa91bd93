"""A 1-D temporal UNet over action chunks, conditioned by FiLM (Diffusion Policy's design).

The network takes two times, `r` and `t`, so that a MeanFlow objective can ask for the
average velocity over `[r, t]`; objectives that need one time pass `r = t`. Every operation
is forward-mode differentiable (GroupNorm, Mish, plain convolutions, no in-place updates), so
`torch.func.jvp` can run through it. The forward pass can also hand out the features of the
first down blocks, for a representation regulariser computed on the same pass.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn


@dataclass
class UnetConfig:
    down_dims: list[int] = field(default_factory=lambda: [64, 128, 256])
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 128
    # Times live in [0, 1]; they are multiplied by this before the sinusoidal embedding.
    time_scale: float = 100.0
    # How `r` enters: its own embedder added to t's (MP1), an embedding of t - r added to
    # t's (MeanFlow paper), or not at all (objectives with r = t).
    r_embedding: Literal["r", "t_minus_r", "none"] = "none"
    # Down levels whose outputs `forward(..., return_features=True)` hands out.
    feature_levels: list[int] = field(default_factory=lambda: [0, 1])


class SinusoidalEmbedding(nn.Module):
    """sin/cos of `scale * t` at geometric frequencies, returned in `out_dtype` (the following
    layer's). The angles, up to `scale` radians, are computed in float32: bf16's 8-bit mantissa
    would move them by tenths of a radian (see `ConditionalUnet1D.low_precision_copy`)."""

    def __init__(self, dim: int, scale: float):
        super().__init__()
        half = dim // 2
        frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half) / (half - 1))
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.scale = scale
        self.out_dtype = torch.float32

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (self.scale * t.float())[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.out_dtype)


def time_embedder(dim: int, scale: float) -> nn.Sequential:
    return nn.Sequential(
        SinusoidalEmbedding(dim, scale), nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim)
    )


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int):
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the conditioning vector scales and shifts the first one's output."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.conv1 = ConvBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv2 = ConvBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None].chunk(2, dim=1)
        h = self.conv1(x) * scale + shift
        return self.conv2(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, action_dim: int, global_cond_dim: int, config: UnetConfig):
        super().__init__()
        self.config = config
        embed_dim = config.time_embed_dim
        self.t_embedding = time_embedder(embed_dim, config.time_scale)
        self.r_embedding = None if config.r_embedding == "none" else time_embedder(embed_dim, config.time_scale)
        cond_dim = embed_dim + global_cond_dim
        block = lambda cin, cout: FiLMResidualBlock(cin, cout, cond_dim, config.kernel_size, config.n_groups)

        dims = [action_dim, *config.down_dims]
        levels = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(levels):
            is_last = i == len(levels) - 1
            resample = nn.Identity() if is_last else nn.Conv1d(cout, cout, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([block(cin, cout), block(cout, cout), resample]))
        self.mid = nn.ModuleList([block(dims[-1], dims[-1]), block(dims[-1], dims[-1])])
        self.up = nn.ModuleList()
        # Each up level undoes one downsampling; the finest level's skip goes unused, as in
        # Diffusion Policy's UNet.
        for cin, cout in reversed(levels[1:]):
            upsample = nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([block(2 * cout, cin), block(cin, cin), upsample]))
        start = config.down_dims[0]
        self.head = nn.Sequential(
            ConvBlock(start, start, config.kernel_size, config.n_groups), nn.Conv1d(start, action_dim, 1)
        )

    def low_precision_copy(self, dtype: torch.dtype = torch.bfloat16) -> "ConditionalUnet1D":
        """An inference copy with weights in `dtype`; it takes float32 r and t (the time sinusoids
        are computed in float32, then cast)."""
        unet = copy.deepcopy(self).to(dtype)
        for original, embedding in ((self.t_embedding, unet.t_embedding), (self.r_embedding, unet.r_embedding)):
            if embedding is not None:
                embedding[0].frequencies = original[0].frequencies.clone()  # float32, as cast would round them
                embedding[0].out_dtype = dtype
        return unet.eval().requires_grad_(False)

    def embed_times(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        embedding = self.t_embedding(t)
        if self.config.r_embedding == "r":
            embedding = embedding + self.r_embedding(r)
        elif self.config.r_embedding == "t_minus_r":
            embedding = embedding + self.r_embedding(t - r)
        return embedding

    def forward(
        self,
        z: torch.Tensor,
        r: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """z (B, horizon, Da), r and t (B,), cond (B, global_cond_dim) -> (B, horizon, Da)."""
        film_cond = torch.cat([self.embed_times(r, t), cond], dim=-1)
        x = z.transpose(1, 2)
        skips, features = [], []
        for level, (block1, block2, downsample) in enumerate(self.down):
            x = block2(block1(x, film_cond), film_cond)
            skips.append(x)
            if level in self.config.feature_levels:
                features.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, film_cond)
        for block1, block2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(block2(block1(x, film_cond), film_cond))
        out = self.head(x).transpose(1, 2)
        return (out, features) if return_features else out
