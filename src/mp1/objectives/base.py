"""What every objective shares: the network contract and a few tensor helpers.

A network is any callable `net(z, r, t, cond)` returning a tensor shaped like `z`, with `r`
and `t` of shape `(B,)` in [0, 1]. It may instead return `(output, features)`, a list of
intermediate feature tensors from the same pass; an objective then hands those features to
the `feature_loss` it was given (e.g. a dispersive loss) and adds the result to its loss.

An objective's `loss` returns `(loss, info)`, info holding detached scalar tensors: reading one
(`.item()`) waits for the device, so the trainer reads them only when it writes a record.
"""

from __future__ import annotations

from typing import Callable, Union

import torch

NetOutput = Union[torch.Tensor, tuple[torch.Tensor, list[torch.Tensor]]]
Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], NetOutput]
FeatureLoss = Callable[[list[torch.Tensor]], torch.Tensor]


def split_output(output: NetOutput) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if isinstance(output, tuple):
        return output
    return output, []


def prediction(output: NetOutput) -> torch.Tensor:
    return split_output(output)[0]


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshapes a (B,) tensor so that it broadcasts against `like` (B, ...)."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def add_feature_loss(
    loss: torch.Tensor, info: dict[str, torch.Tensor], features: list[torch.Tensor], feature_loss: FeatureLoss | None
) -> torch.Tensor:
    if feature_loss is None or not features:
        return loss
    extra = feature_loss(features)
    info["feature_loss"] = extra.detach()
    return loss + extra


def logit_normal(batch: int, mean: float, std: float, device: torch.device) -> torch.Tensor:
    return torch.sigmoid(mean + std * torch.randn(batch, device=device))


def walk_noise_to_data(net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int, mean_velocity: bool) -> torch.Tensor:
    """Steps z from t=1 (noise) to t=0 (data): `z <- z - (t - t_next) u`, with u the average
    velocity over [t_next, t] (MeanFlow: `u(z, t_next, t)`) or the instantaneous one (flow
    matching's Euler step: `u(z, t, t)`)."""
    times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    z = noise
    for t_now, t_next in zip(times[:-1], times[1:]):
        t = t_now.expand(noise.shape[0])
        r = t_next.expand(noise.shape[0]) if mean_velocity else t
        z = z - (t_now - t_next) * prediction(net(z, r, t, cond))
    return z
