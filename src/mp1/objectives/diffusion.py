"""DP3's diffusion objective: DDPM training, DDIM sampling, through diffusers' schedulers.

The network sees `t = k / num_train_steps` for integer timestep k (and `r = t`), so every
objective feeds it times in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from mp1.objectives.base import FeatureLoss, Net, add_feature_loss, prediction, split_output


@dataclass
class Diffusion:
    num_train_steps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["sample", "epsilon"] = "sample"
    clip_sample: bool = True
    sample_steps: int = 10

    @cached_property
    def _schedulers(self):
        from diffusers import DDIMScheduler, DDPMScheduler

        settings = dict(
            num_train_timesteps=self.num_train_steps,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            clip_sample=self.clip_sample,
        )
        return DDPMScheduler(**settings), DDIMScheduler(**settings, set_alpha_to_one=True, steps_offset=0)

    def loss(
        self, net: Net, x: torch.Tensor, cond: torch.Tensor, feature_loss: FeatureLoss | None = None, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noise = torch.randn_like(x)
        steps = torch.randint(0, self.num_train_steps, (x.shape[0],), device=x.device)
        noisy = self._schedulers[0].add_noise(x, noise, steps)
        t = steps.float() / self.num_train_steps
        out, features = split_output(net(noisy, t, t, cond))
        target = x if self.prediction_type == "sample" else noise
        loss = (out - target).pow(2).mean()
        info = {"mse": loss.detach()}
        loss = add_feature_loss(loss, info, features, feature_loss)
        info["loss"] = loss.detach()
        return loss, info

    def sample(self, net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        scheduler = self._schedulers[1]
        scheduler.set_timesteps(steps or self.sample_steps, device=noise.device)
        z = noise
        for step in scheduler.timesteps:
            t = (step.float() / self.num_train_steps).expand(noise.shape[0]).to(noise.device)
            z = scheduler.step(prediction(net(z, t, t, cond)), step, z).prev_sample
        return z
