"""Windows of demonstrations in the policy's batch format, with DP3's edge padding.

Every window covers `horizon` steps of one episode. Windows may start up to
`n_obs_steps - 1` steps before the episode and end up to `n_action_steps - 1` steps after
it; the missing steps repeat the episode's first or last step. A window never mixes two
episodes.
"""

from __future__ import annotations

import os
from typing import Iterator, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from mp1.data.store import load_store
from mp1.runtime import LinearNormalizer


class PointCloudDataset(Dataset):
    def __init__(
        self,
        path: str | os.PathLike,
        horizon: int = 4,
        n_obs_steps: int = 2,
        n_action_steps: int = 3,
        split: Literal["train", "val"] = "train",
        val_episodes: int = 0,
        max_episodes: int | None = None,
        seed: int = 0,
    ):
        """`val_episodes` episodes (drawn with `seed`) are held out for validation; the
        training split keeps at most `max_episodes` of the rest, in store order, so that
        smaller few-shot sets are subsets of larger ones."""
        store = load_store(path)
        self.horizon, self.n_obs_steps = horizon, n_obs_steps
        self.attrs = store.attrs
        self.episodes = split_episodes(store.num_episodes, split, val_episodes, max_episodes, seed)
        if not self.episodes:
            raise ValueError(f"{path}: the {split} split is empty ({store.num_episodes} episodes, val_episodes={val_episodes})")
        self.point_cloud = store.arrays["point_cloud"].astype(np.float32, copy=False)
        self.state = store.arrays["state"].astype(np.float32, copy=False)
        self.action = store.arrays["action"].astype(np.float32, copy=False)
        self.windows = np.array(
            [
                window
                for episode in self.episodes
                for window in episode_windows(*store.episode_bounds(episode), horizon, n_obs_steps - 1, n_action_steps - 1)
            ]
        )
        if len(self.windows) == 0:
            raise ValueError(f"{path}: no window of horizon {horizon} fits the {split} episodes")
        start, first, last = (self.windows[:, i : i + 1] for i in (0, 2, 3))
        self.window_steps = np.clip(start + np.arange(horizon), first, last - 1)  # (windows, horizon) store indices

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        steps = self.window_steps[index]
        obs_steps = steps[: self.n_obs_steps]
        return {
            "obs": {
                "point_cloud": torch.from_numpy(self.point_cloud[obs_steps]),
                "agent_pos": torch.from_numpy(self.state[obs_steps]),
            },
            "action": torch.from_numpy(self.action[steps]),
        }

    def steps(self) -> np.ndarray:
        """Indices of every step of the split's episodes."""
        return np.unique(np.concatenate([np.arange(first, last) for _, _, first, last in self.windows]))

    def get_normalizer(self) -> LinearNormalizer:
        steps = self.steps()
        normalizer = LinearNormalizer(
            {"point_cloud": self.point_cloud.shape[-1], "agent_pos": self.state.shape[-1], "action": self.action.shape[-1]}
        )
        return normalizer.fit(
            {"point_cloud": self.point_cloud[steps], "agent_pos": self.state[steps], "action": self.action[steps]}
        )


class DeviceBatches:
    """Shuffled batches of a dataset's windows, gathered by index from arrays held on `device`:
    no per-sample Python, no worker processes and no host-to-device copy per step (10 demos are
    about 1k windows over 2k steps of 512 x 3 points, ~12 MB). Each pass over the data draws one
    permutation from `generator`; the last batch of a pass may be smaller."""

    def __init__(self, dataset: PointCloudDataset, batch_size: int, device: torch.device, generator: torch.Generator):
        self.batch_size, self.device, self.generator = batch_size, device, generator
        self.n_obs_steps = dataset.n_obs_steps
        self.window_steps = torch.from_numpy(dataset.window_steps).to(device)
        self.arrays = {
            key: torch.from_numpy(getattr(dataset, key)).to(device) for key in ("point_cloud", "state", "action")
        }

    def __len__(self) -> int:
        return -(-len(self.window_steps) // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.window_steps), generator=self.generator).to(self.device)
        for indices in order.split(self.batch_size):
            steps = self.window_steps[indices]
            obs_steps = steps[:, : self.n_obs_steps]
            yield {
                "obs": {"point_cloud": self.arrays["point_cloud"][obs_steps], "agent_pos": self.arrays["state"][obs_steps]},
                "action": self.arrays["action"][steps],
            }


def split_episodes(
    num_episodes: int, split: str, val_episodes: int, max_episodes: int | None, seed: int
) -> list[int]:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 0 <= val_episodes < num_episodes:
        raise ValueError(
            f"val_episodes={val_episodes} must be at least 0 and leave a training episode: the store holds {num_episodes}"
        )
    val = set(np.random.default_rng(seed).choice(num_episodes, val_episodes, replace=False).tolist())
    if split == "val":
        return sorted(val)
    train = [episode for episode in range(num_episodes) if episode not in val]
    return train if max_episodes is None else train[:max_episodes]


def episode_windows(
    first: int, last: int, horizon: int, pad_before: int, pad_after: int
) -> list[tuple[int, int, int, int]]:
    """(window start, window end, episode first step, episode end) for every window of an
    episode occupying steps [first, last)."""
    return [
        (start, start + horizon, first, last)
        for start in range(first - pad_before, last - horizon + pad_after + 1)
    ]
