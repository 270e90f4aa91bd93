"""MeanFlow: learn the average velocity over [r, t], so that one network evaluation jumps
from noise to data.

Convention: data `x` at t=0, noise `e` at t=1, `z_t = (1 - t) x + t e`, `v = e - x`. The
network `u(z, r, t | c)` is trained on the MeanFlow identity

    u(z_t, r, t) = v - (t - r) d/dt u(z_t, r, t),   d/dt u = v . du/dz + du/dt,

where the total derivative is one Jacobian-vector product with tangents (v, 0, 1) for
(z, r, t). The right-hand side is the (stop-gradient) target. Sampling walks t = 1 -> 0:
`z <- z - (t - r) u(z, r, t)`, so one step is `x = e - u(e, 0, 1)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from mp1.objectives.base import (
    FeatureLoss,
    Net,
    add_feature_loss,
    logit_normal,
    per_sample,
    prediction,
    split_output,
    walk_noise_to_data,
)


@dataclass
class MeanFlow:
    # r and t: two logit-normal draws, t the larger; a fraction of the batch gets r = t.
    time_mean: float = -0.4
    time_std: float = 1.0
    equal_times_fraction: float = 0.5
    # Adaptive loss weight w = 1 / (err + eps)^power, err the per-sample squared error
    # reduced by `error_reduction` over the action dimensions.
    adaptive_weight_power: float = 0.5
    adaptive_weight_eps: float = 1e-3
    error_reduction: Literal["mean", "sum"] = "mean"
    # The velocity in the target is replaced by v_hat = w v + (1 - w) u(z_t, t, t | c'):
    # "self" uses c' = c (MP1), "cfg" uses c' = null on a conditionally dropped-out batch
    # (classifier-free guidance folded into training, MeanFlow paper). No guidance at sampling.
    guidance: Literal["none", "self", "cfg"] = "self"
    guidance_weight: float = 2.0
    cond_dropout: float = 0.1
    # How d/dt u is computed: forward-mode torch.func.jvp, double-backward
    # torch.autograd.functional.jvp (MP1's code), or central finite differences.
    jvp: Literal["forward", "double_backward", "finite_difference"] = "forward"
    finite_difference_eps: float = 1e-3
    sample_steps: int = 1

    @classmethod
    def from_preset(cls, name: Literal["mp1", "meanflow"], **overrides) -> "MeanFlow":
        return cls(**{**asdict(cls()), **MEANFLOW_PRESETS[name], **overrides})

    def sample_times(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        a = logit_normal(batch, self.time_mean, self.time_std, device)
        b = logit_normal(batch, self.time_mean, self.time_std, device)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        equal = torch.rand(batch, device=device) < self.equal_times_fraction
        return torch.where(equal, t, r), t

    def time_derivative(
        self, net: Net, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, velocity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Returns u(z, r, t | c), its total derivative d/dt u along `velocity`, and the
        features of the (differentiable) forward pass that produced u."""
        tangents = (velocity, torch.zeros_like(r), torch.ones_like(t))
        if self.jvp == "forward":
            # Mixed precision: the autocast region is entered again inside the transformed function.
            # On CPU, autocast under forward-mode AD fails in 1x1 convolutions (torch 2.13), so there
            # the JVP pass runs in float32 and only the other passes in bfloat16.
            device = z.device.type
            enabled = torch.is_autocast_enabled(device) and device != "cpu"
            autocast = torch.autocast(device, torch.get_autocast_dtype(device), enabled)

            def u_and_features(z, r, t):
                with autocast:
                    return split_output(net(z, r, t, cond))

            u, dudt, features = torch.func.jvp(u_and_features, (z, r, t), tangents, has_aux=True)
            return u, dudt.detach(), features
        if self.jvp == "double_backward":
            def flat(z, r, t):
                u, features = split_output(net(z, r, t, cond))
                return (u, *features)

            outputs, jvps = torch.autograd.functional.jvp(flat, (z, r, t), tangents, create_graph=True)
            return outputs[0], jvps[0].detach(), list(outputs[1:])
        u, features = split_output(net(z, r, t, cond))
        eps = self.finite_difference_eps
        with torch.no_grad():
            ahead = prediction(net(z + eps * velocity, r, t + eps, cond))
            behind = prediction(net(z - eps * velocity, r, t - eps, cond))
        return u, (ahead - behind) / (2 * eps), features

    def regression_target(
        self, net: Net, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, velocity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """u(z, r, t | c) and its stop-gradient target `velocity - (t - r) d/dt u`."""
        u, dudt, features = self.time_derivative(net, z, r, t, cond, velocity)
        return u, (velocity - per_sample(t - r, z) * dudt).detach(), features

    def loss(
        self, net: Net, x: torch.Tensor, cond: torch.Tensor, feature_loss: FeatureLoss | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        batch = x.shape[0]
        noise = torch.randn_like(x)
        r, t = self.sample_times(batch, x.device)
        z = (1 - per_sample(t, x)) * x + per_sample(t, x) * noise
        velocity = noise - x

        if self.guidance == "cfg":
            dropped = torch.rand(batch, device=x.device) < self.cond_dropout
            cond = torch.where(dropped[:, None], torch.zeros_like(cond), cond)
        if self.guidance != "none":
            guide_cond = torch.zeros_like(cond) if self.guidance == "cfg" else cond
            with torch.no_grad():
                u_instant = prediction(net(z, t, t, guide_cond))
            guided = self.guidance_weight * velocity + (1 - self.guidance_weight) * u_instant
            velocity = torch.where(per_sample(dropped, x), velocity, guided) if self.guidance == "cfg" else guided

        u, target, features = self.regression_target(net, z, r, t, cond, velocity)
        squared = (u - target).pow(2).flatten(1)
        error = squared.mean(1) if self.error_reduction == "mean" else squared.sum(1)
        weight = (error.detach() + self.adaptive_weight_eps).pow(-self.adaptive_weight_power)
        loss = (weight * error).mean()

        info = {"loss_meanflow": loss.item(), "mse": squared.mean().item()}
        loss = add_feature_loss(loss, info, features, feature_loss)
        info["loss"] = loss.item()
        return loss, info

    def sample(self, net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return walk_noise_to_data(net, noise, cond, steps or self.sample_steps, mean_velocity=True)


MEANFLOW_PRESETS: dict[str, dict] = {
    "mp1": {},
    "meanflow": dict(
        equal_times_fraction=0.75,
        adaptive_weight_power=1.0,
        adaptive_weight_eps=1e-2,
        error_reduction="sum",
        guidance="cfg",
    ),
}
