"""Dispersive loss: a contrastive regulariser without positive pairs that spreads a batch
of intermediate representations apart (Wang & He, "Diffuse and Disperse", 2025).

For flattened features h_i and a distance D_ij:
- "infonce_l2": log mean_ij exp(-D_ij / tau), D = squared L2 distance;
- "cosine":     log mean_ij exp(-D_ij / tau), D = 1 - cosine similarity;
- "hinge":      mean_{i != j} max(0, margin - D_ij)^2, D = squared L2 distance.
MP1 divides D by its batch maximum (floored, so that a collapsed batch is not blown up to
unit distances); the original paper divides by the feature dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class DispersiveLoss:
    weight: float = 0.0
    variant: Literal["infonce_l2", "cosine", "hinge"] = "infonce_l2"
    temperature: float = 1.0
    normalization: Literal["batch_max", "feature_dim", "none"] = "batch_max"
    margin: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def single(self, features: torch.Tensor) -> torch.Tensor:
        h = features.flatten(1).float()  # distances and exponentials in float32, also under autocast
        if self.variant == "cosine":
            h = F.normalize(h, dim=1)
            distance = 1 - h @ h.T
        else:
            squared_norms = h.pow(2).sum(1)
            distance = (squared_norms[:, None] + squared_norms[None, :] - 2 * h @ h.T).clamp_min(0)
        if self.normalization == "batch_max":
            distance = distance / distance.detach().max().clamp_min(1e-4)
        elif self.normalization == "feature_dim":
            distance = distance / h.shape[1]
        if self.variant == "hinge":
            off_diagonal = ~torch.eye(len(h), dtype=torch.bool, device=h.device)
            return F.relu(self.margin - distance[off_diagonal]).pow(2).mean()
        return torch.logsumexp(-distance.flatten() / self.temperature, dim=0) - math.log(distance.numel())

    def __call__(self, features: list[torch.Tensor]) -> torch.Tensor:
        """weight * sum of the loss over the feature tensors."""
        return self.weight * sum(self.single(f) for f in features)
