"""MeanFlow: learn the average velocity over [r, t], so that one network evaluation jumps
from noise to data.

Convention: data `x` at t=0, noise `e` at t=1, `z_t = (1 - t) x + t e`, `v = e - x`. The
network `u(z, r, t | c)` is trained on the MeanFlow identity

    u(z_t, r, t) = v - (t - r) d/dt u(z_t, r, t),   d/dt u = v . du/dz + du/dt,

where the total derivative is one Jacobian-vector product with tangents (v, 0, 1) for
(z, r, t). The right-hand side is the (stop-gradient) target. Sampling walks t = 1 -> 0:
`z <- z - (t - r) u(z, r, t)`, so one step is `x = e - u(e, 0, 1)`.

Levers from later one-step work, each off by default (MP1's recipe), docs/objectives.md:
- `loss_space="v"` (Improved Mean Flows): the JVP runs along the network's own instantaneous
  velocity `u(z, t, t)` instead of `v`, and the compound `u + (t - r) sg(du/dt)` is regressed on
  `v`; the regression target no longer moves with the network.
- `prediction="x"` (pixel MeanFlow): the network outputs a data-like `x(z, r, t)` and
  `u = (z - x) / t`; the loss stays in velocity space, one step returns the network's `x`.
- `warm_start_steps`: plain flow matching (r = t everywhere) first, the r != t pairs phased in.
- `direction_weight`: a cosine term aligning the predicted and the target mean velocity.
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
    # r and t: two draws (logit-normal, or uniform), t the larger; a fraction of the batch gets
    # r = t, and another the one-step pair r = 0, t = 1 that one-step sampling uses.
    time_distribution: Literal["logit_normal", "uniform"] = "logit_normal"
    time_mean: float = -0.4
    time_std: float = 1.0
    equal_times_fraction: float = 0.5
    boundary_fraction: float = 0.0
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
    # "u": regress u on the MeanFlow target (MP1); "v": Improved Mean Flows' velocity loss.
    loss_space: Literal["u", "v"] = "u"
    # What the network outputs: the mean velocity u, or x with u = (z - x) / max(t, x_prediction_min_t).
    prediction: Literal["u", "x"] = "u"
    x_prediction_min_t: float = 0.05
    # Flow-matching warm start: the fraction of r = t pairs falls linearly from 1 at step 0 to
    # `equal_times_fraction` at this training step (0: no warm start).
    warm_start_steps: int = 0
    # Weight of 1 - cos(u, target), per sample over the whole chunk (0: off).
    direction_weight: float = 0.0
    sample_steps: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.equal_times_fraction <= 1:
            raise ValueError(f"equal_times_fraction must be in [0, 1], got {self.equal_times_fraction}")
        if not 0 <= self.boundary_fraction <= 1 - self.equal_times_fraction:
            raise ValueError(f"boundary_fraction must be in [0, 1 - equal_times_fraction], got {self.boundary_fraction}")
        if self.warm_start_steps < 0 or self.direction_weight < 0 or not 0 < self.x_prediction_min_t < 1:
            raise ValueError("warm_start_steps and direction_weight must be >= 0, x_prediction_min_t in (0, 1)")

    @classmethod
    def from_preset(cls, name: Literal["mp1", "meanflow"], **overrides) -> "MeanFlow":
        return cls(**{**asdict(cls()), **MEANFLOW_PRESETS[name], **overrides})

    def equal_times_at(self, step: int) -> float:
        """The fraction of r = t pairs at a training step (the warm start's schedule)."""
        if step >= self.warm_start_steps:
            return self.equal_times_fraction
        return 1 - (1 - self.equal_times_fraction) * step / self.warm_start_steps

    def draw_time(self, batch: int, device: torch.device) -> torch.Tensor:
        if self.time_distribution == "uniform":
            return torch.rand(batch, device=device)
        return logit_normal(batch, self.time_mean, self.time_std, device)

    def sample_times(self, batch: int, device: torch.device, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.draw_time(batch, device), self.draw_time(batch, device)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        # One uniform draw per sample splits the batch: r = t, the one-step pair, or (r, t) as drawn.
        share = torch.rand(batch, device=device)
        equal = share < self.equal_times_at(step)
        boundary = (share >= 1 - self.boundary_fraction) & ~equal
        r = torch.where(equal, t, torch.where(boundary, torch.zeros_like(r), r))
        return r, torch.where(boundary, torch.ones_like(t), t)

    def velocity_net(self, net: Net) -> Net:
        """The network as a mean-velocity predictor: itself, or u = (z - x) / t around an x-predictor."""
        if self.prediction == "u":
            return net

        def mean_velocity(z, r, t, cond):
            output = net(z, r, t, cond)
            x, features = split_output(output)
            u = (z - x) / per_sample(t.clamp_min(self.x_prediction_min_t), z)
            return (u, features) if isinstance(output, tuple) else u

        return mean_velocity

    def time_derivative(
        self, net: Net, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, tangent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Returns u(z, r, t | c), its total derivative d/dt u along `tangent` (for z; r and t move as 0 and 1), and the
        features of the (differentiable) forward pass that produced u."""
        tangents = (tangent, torch.zeros_like(r), torch.ones_like(t))
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
            ahead = prediction(net(z + eps * tangent, r, t + eps, cond))
            behind = prediction(net(z - eps * tangent, r, t - eps, cond))
        return u, (ahead - behind) / (2 * eps), features

    def regression_target(
        self, net: Net, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
        velocity: torch.Tensor, tangent: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """u(z, r, t | c) and its stop-gradient target `velocity - (t - r) d/dt u`, the total
        derivative taken along `tangent`. Regressing u on it is the same as regressing the
        compound `u + (t - r) sg(d/dt u)` on `velocity`: the v-loss view of Improved Mean Flows."""
        u, dudt, features = self.time_derivative(net, z, r, t, cond, tangent)
        return u, (velocity - per_sample(t - r, z) * dudt).detach(), features

    def loss(
        self, net: Net, x: torch.Tensor, cond: torch.Tensor, feature_loss: FeatureLoss | None = None, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net = self.velocity_net(net)
        batch = x.shape[0]
        noise = torch.randn_like(x)
        r, t = self.sample_times(batch, x.device, step)
        z = (1 - per_sample(t, x)) * x + per_sample(t, x) * noise
        velocity = noise - x

        if self.guidance == "cfg":
            dropped = torch.rand(batch, device=x.device) < self.cond_dropout
            cond = torch.where(dropped[:, None], torch.zeros_like(cond), cond)
        u_instant = None  # u(z, t, t | c), for self-guidance and the v-loss
        if self.guidance == "self" or self.loss_space == "v":
            with torch.no_grad():
                u_instant = prediction(net(z, t, t, cond))
        if self.guidance != "none":
            if self.guidance == "cfg":
                with torch.no_grad():
                    u_guide = prediction(net(z, t, t, torch.zeros_like(cond)))
            else:
                u_guide = u_instant
            guided = self.guidance_weight * velocity + (1 - self.guidance_weight) * u_guide
            velocity = torch.where(per_sample(dropped, x), velocity, guided) if self.guidance == "cfg" else guided

        # The JVP's z-tangent: the (guided) conditional velocity, or the network's own (v-loss).
        tangent = velocity if self.loss_space == "u" else u_instant
        u, target, features = self.regression_target(net, z, r, t, cond, velocity, tangent)
        squared = (u - target).pow(2).flatten(1)
        error = squared.mean(1) if self.error_reduction == "mean" else squared.sum(1)
        weight = (error.detach() + self.adaptive_weight_eps).pow(-self.adaptive_weight_power)
        loss = (weight * error).mean()

        info = {"loss_meanflow": loss.detach(), "mse": squared.mean().detach()}
        if self.direction_weight > 0:
            misalignment = 1 - torch.nn.functional.cosine_similarity(u.flatten(1), target.flatten(1), dim=1)
            loss = loss + self.direction_weight * misalignment.mean()
            info["misalignment"] = misalignment.mean().detach()
        loss = add_feature_loss(loss, info, features, feature_loss)
        info["loss"] = loss.detach()
        return loss, info

    def sample(self, net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return walk_noise_to_data(self.velocity_net(net), noise, cond, steps or self.sample_steps, mean_velocity=True)


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
