"""Offline validation: how far a policy's sampled action chunks fall from the demonstrated ones on
held-out episodes. It is the measure of a run with no simulator to roll out in (a robot's own
recordings), and it needs none: numpy and torch only."""

from __future__ import annotations

from typing import Any

import torch

from mp1.data import PointCloudDataset
from mp1.policies import Policy


def validation_error(policy: Policy, dataset: PointCloudDataset, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Mean squared error, in the normaliser's units (each action dimension scaled to [-1, 1]),
    between the chunk the policy samples (its own sampler, steps and noise scale; the noise
    drawn from `seed`) and the demonstrated chunk, over every window of `dataset`'s episodes:
    overall and per action dimension."""
    generator = torch.Generator().manual_seed(seed)
    squared_sum = torch.zeros(policy.config.action_dim, dtype=torch.float64)
    for start in range(0, len(dataset), batch_size):
        steps = dataset.window_steps[start : start + batch_size]
        obs_steps = steps[:, : policy.config.n_obs_steps]
        obs = {"point_cloud": dataset.point_cloud[obs_steps], "agent_pos": dataset.state[obs_steps]}
        predicted = policy.predict_action(obs, generator=generator)["action_pred"].cpu()
        with torch.inference_mode():
            normalise = lambda action: policy.normalizer.normalize("action", action.to(policy.device)).cpu()
            error = normalise(predicted) - normalise(torch.from_numpy(dataset.action[steps]))
        squared_sum += error.double().pow(2).sum((0, 1))
    per_dimension = squared_sum / (len(dataset) * policy.config.horizon)
    return {"val_mse": float(per_dimension.mean()), "val_mse_per_dim": per_dimension.tolist(),
            "val_windows": len(dataset), "val_episodes": len(dataset.episodes)}

