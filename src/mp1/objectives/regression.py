"""Deterministic regression: the same network asked for the action chunk straight from the
observation (its noise input held at zero, times at the one-step pair r = 0, t = 1), trained by
mean squared error. Not a generative model: it averages the modes of multimodal data. It is the
diagnostic for short budgets: if it matches the generative objectives there, the objective is
not what holds the policy back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mp1.objectives.base import FeatureLoss, Net, add_feature_loss, prediction, split_output


@dataclass
class Regression:
    sample_steps: int = 1  # one network evaluation; more would repeat the same one

    @staticmethod
    def predict(net: Net, like: torch.Tensor, cond: torch.Tensor):
        zeros, ones = torch.zeros(like.shape[0], device=like.device), torch.ones(like.shape[0], device=like.device)
        return net(torch.zeros_like(like), zeros, ones, cond)

    def loss(
        self, net: Net, x: torch.Tensor, cond: torch.Tensor, feature_loss: FeatureLoss | None = None, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        output, features = split_output(self.predict(net, x, cond))
        loss = (output - x).pow(2).mean()
        info = {"mse": loss.detach()}
        loss = add_feature_loss(loss, info, features, feature_loss)
        info["loss"] = loss.detach()
        return loss, info

    def sample(self, net: Net, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return prediction(self.predict(net, noise, cond))
