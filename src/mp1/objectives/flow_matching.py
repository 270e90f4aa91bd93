"""Plain (rectified) flow matching, in MeanFlow's convention: the reference point for what
MeanFlow adds. The network is asked for the instantaneous velocity, `u(z, t, t)`; one Euler
step from noise lands on the conditional mean, which is why it fails on multimodal data."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mp1.objectives.base import (
    FeatureLoss,
    Net,
    add_feature_loss,
    logit_normal,
    per_sample,
    split_output,
    walk_noise_to_data,
)


@dataclass
class FlowMatching:
    time_mean: float = -0.4
    time_std: float = 1.0
    sample_steps: int = 1

    def loss(
        self, net: Net, x: torch.Tensor, cond: torch.Tensor, feature_loss: FeatureLoss | None = None, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noise = torch.randn_like(x)
        t = logit_normal(x.shape[0], self.time_mean, self.time_std, x.device)
        z = (1 - per_sample(t, x)) * x + per_sample(t, x) * noise
        u, features = split_output(net(z, t, t, cond))
        loss = (u - (noise - x)).pow(2).mean()
        info = {"mse": loss.detach()}
        loss = add_feature_loss(loss, info, features, feature_loss)
        info["loss"] = loss.detach()
        return loss, info

    def sample(self, net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return walk_noise_to_data(net, noise, cond, steps or self.sample_steps, mean_velocity=False)
