"""Consistency flow matching (FlowPolicy): a velocity field whose straight-line
extrapolations to the end of each time segment agree along a trajectory, so one Euler step
suffices.

FlowPolicy's own convention, opposite to MeanFlow's: noise `e` at t=0, data `x` at t=1,
`x_t = t x + (1 - t) e`. With `s = min(t + delta, 1)` on the same noise/data pair and
`f(x_t, t) = x_t + (T - t) v(x_t, t)`, T the end of t's segment, the loss is
`||f_t - f_s||^2 + alpha ||v_t - v_s||^2`; the velocity term is masked where s would cross
into the next segment (there v may legitimately jump).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mp1.objectives.base import FeatureLoss, Net, add_feature_loss, per_sample, prediction, split_output


@dataclass
class ConsistencyFlow:
    eps: float = 1e-2
    delta: float = 1e-2
    num_segments: int = 2
    alpha: float = 1e-5
    # FlowPolicy's code back-propagates through the s branch too; the reference
    # consistency-FM code treats it as a fixed target.
    second_branch_grad: bool = True
    sample_steps: int = 1

    def loss(
        self, net: Net, x: torch.Tensor, cond: torch.Tensor, feature_loss: FeatureLoss | None = None, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noise = torch.randn_like(x)
        t = self.eps + (1 - self.eps) * torch.rand(x.shape[0], device=x.device)
        s = (t + self.delta).clamp(max=1.0)
        boundaries = torch.linspace(0.0, 1.0, self.num_segments + 1, device=x.device)
        segment_end = boundaries[torch.searchsorted(boundaries, t).clamp(min=1)]

        x_t = per_sample(t, x) * x + per_sample(1 - t, x) * noise
        x_s = per_sample(s, x) * x + per_sample(1 - s, x) * noise
        v_t, features = split_output(net(x_t, t, t, cond))
        with torch.set_grad_enabled(self.second_branch_grad and torch.is_grad_enabled()):
            v_s = prediction(net(x_s, s, s, cond))
        f_t = x_t + per_sample(segment_end - t, x) * v_t
        f_s = x_s + per_sample(segment_end - s, x) * v_s

        consistency = (f_t - f_s).pow(2).flatten(1).mean(1)
        same_segment = (s < segment_end) | (segment_end == 1.0)
        velocity = (v_t - v_s).pow(2).flatten(1).mean(1) * same_segment
        loss = (consistency + self.alpha * velocity).mean()
        info = {"loss_consistency": consistency.mean().detach(), "loss_velocity": velocity.mean().detach()}
        loss = add_feature_loss(loss, info, features, feature_loss)
        info["loss"] = loss.detach()
        return loss, info

    def sample(self, net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = steps or self.sample_steps
        times = torch.linspace(self.eps, 1.0, steps + 1, device=noise.device)  # training never sees t < eps
        x = noise
        for t_now, t_next in zip(times[:-1], times[1:]):
            t = t_now.expand(noise.shape[0])
            x = x + (t_next - t_now) * prediction(net(x, t, t, cond))
        return x
