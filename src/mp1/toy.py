"""A 2-D conditional toy that separates one-step generators from one-step regressors.

Eight Gaussian modes on a circle; a condition picks one of four opposite pairs, so each
conditional distribution is bimodal. A sampler that returns the conditional mean (one-step
flow matching) lands between the two modes, on none of them; a real one-step generator
(MeanFlow, consistency flow) lands on one of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mp1.objectives import Objective


@dataclass
class ToyMixture:
    num_modes: int = 8
    radius: float = 1.0
    std: float = 0.05

    @property
    def num_classes(self) -> int:
        return self.num_modes // 2

    @property
    def centers(self) -> torch.Tensor:
        angles = 2 * math.pi * torch.arange(self.num_modes) / self.num_modes
        return self.radius * torch.stack([angles.cos(), angles.sin()], dim=1)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns points (B, 2) and class labels (B,): class k owns modes k and k + num_classes."""
        labels = torch.randint(0, self.num_classes, (batch,), generator=generator)
        side = torch.randint(0, 2, (batch,), generator=generator)
        modes = labels + side * self.num_classes
        points = self.centers[modes] + self.std * torch.randn(batch, 2, generator=generator)
        return points, labels

    def on_correct_mode(self, points: torch.Tensor, labels: torch.Tensor, tolerance: float = 4.0) -> torch.Tensor:
        """True where a point lies within `tolerance` standard deviations of one of its class's modes."""
        centers = self.centers
        own = torch.stack([centers[labels], centers[labels + self.num_classes]], dim=1)
        distance = (points[:, None, :] - own).norm(dim=-1).amin(dim=1)
        return distance < tolerance * self.std

    def modes_covered(self, points: torch.Tensor, labels: torch.Tensor, min_share: float = 0.1) -> int:
        """How many of the modes get at least `min_share` of their class's samples on them: a
        sampler that picks one mode of each pair covers half of them."""
        centers = self.centers
        nearest = (points[:, None, :] - centers).norm(dim=-1).argmin(dim=1)
        hits = self.on_correct_mode(points, labels)
        covered = 0
        for mode in range(self.num_modes):
            of_class = labels == mode % self.num_classes
            if of_class.any() and (hits & of_class & (nearest == mode)).sum() >= min_share * of_class.sum():
                covered += 1
        return covered


class ToyNet(nn.Module):
    """MLP u(z, r, t | class) on [z, t, t - r, one-hot class]."""

    def __init__(self, num_classes: int, width: int = 128, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        in_dim = 2 + 2 + num_classes
        for _ in range(depth):
            layers += [nn.Linear(in_dim, width), nn.SiLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, 2))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([z, t[:, None], (t - r)[:, None], cond], dim=-1))


def train_toy(
    objective: Objective, steps: int = 3000, batch: int = 256, lr: float = 1e-3, seed: int = 0
) -> tuple[ToyNet, ToyMixture]:
    torch.manual_seed(seed)
    mixture = ToyMixture()
    net = ToyNet(mixture.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        points, labels = mixture.sample(batch)
        loss, _ = objective.loss(net, points, nn.functional.one_hot(labels, mixture.num_classes).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net, mixture


@torch.no_grad()
def evaluate_toy(
    objective: Objective, net: ToyNet, mixture: ToyMixture, steps: int | None = None, samples: int = 2000, seed: int = 1,
    noise_scale: float = 1.0,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Fraction of samples on a mode of their class, with the samples and their labels;
    `noise_scale` multiplies the initial noise, as a policy's inference knob of that name does."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, mixture.num_classes, (samples,), generator=generator)
    noise = noise_scale * torch.randn(samples, 2, generator=generator)
    cond = nn.functional.one_hot(labels, mixture.num_classes).float()
    points = objective.sample(net, noise, cond, steps=steps)
    return mixture.on_correct_mode(points, labels).float().mean().item(), points, labels
