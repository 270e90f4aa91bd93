"""Per-dimension linear scaling of each data key to [-1, 1], fitted once from the dataset
and stored as buffers, so it travels with the weights in the policy file."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LinearNormalizer(nn.Module):
    def __init__(self, dims: dict[str, int]):
        super().__init__()
        self.dims = dict(dims)
        for key, dim in self.dims.items():
            self.register_buffer(f"{key}_scale", torch.ones(dim))
            self.register_buffer(f"{key}_offset", torch.zeros(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, data: dict[str, np.ndarray | torch.Tensor], min_range: float = 1e-4) -> "LinearNormalizer":
        """Fits each key's scaling on its values, over all but the last (feature) axis. A
        dimension whose range is below `min_range` is only centred, not stretched."""
        for key, dim in self.dims.items():
            values = torch.as_tensor(np.asarray(data[key]), dtype=torch.float32).reshape(-1, dim)
            low, high = values.amin(0), values.amax(0)
            flat = (high - low) < min_range
            scale = torch.where(flat, torch.ones_like(low), 2.0 / (high - low).clamp_min(min_range))
            offset = torch.where(flat, -(high + low) / 2, -1.0 - scale * low)
            getattr(self, f"{key}_scale").copy_(scale)
            getattr(self, f"{key}_offset").copy_(offset)
        self.fitted.fill_(True)
        return self

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, f"{key}_scale") + getattr(self, f"{key}_offset")

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{key}_offset")) / getattr(self, f"{key}_scale")
