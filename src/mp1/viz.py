"""Pictures of demonstration stores: point clouds along an episode, and camera videos."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mp1.data.store import load_store


def plot_episode_clouds(store_path: str | os.PathLike, out: str | os.PathLike, episode: int = 0, frames: int = 6) -> Path:
    """A row of 3-D scatter plots of the episode's point clouds at evenly spaced steps,
    coloured by height (or by the points' own colour when the store has XYZRGB), with the crop
    box the store records drawn in grey: points hugging a face of the box mean it cuts the scene."""
    store = load_store(store_path)
    if not 0 <= episode < store.num_episodes:
        raise ValueError(f"episode {episode} out of range: the store has {store.num_episodes} episodes")
    first, last = store.episode_bounds(episode)
    steps = np.linspace(first, last - 1, min(frames, last - first)).round().astype(int)
    clouds = store.arrays["point_cloud"][steps]
    low, high = clouds[..., :3].reshape(-1, 3).min(0), clouds[..., :3].reshape(-1, 3).max(0)
    observation = store.attrs.get("observation", {})
    box = (np.asarray(observation["crop_low"]), np.asarray(observation["crop_high"])) if "crop_low" in observation else None
    if box is not None:
        low, high = np.minimum(low, box[0]), np.maximum(high, box[1])

    figure = plt.figure(figsize=(3.2 * len(steps), 3.6))
    for column, (step, cloud) in enumerate(zip(steps, clouds)):
        ax = figure.add_subplot(1, len(steps), column + 1, projection="3d")
        colours = cloud[:, 3:6] if cloud.shape[1] == 6 else cloud[:, 2]
        ax.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], c=colours, s=1.5, cmap="viridis")
        if box is not None:
            draw_box(ax, *box)
        ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), zlim=(low[2], high[2]), title=f"step {step - first}")
        ax.set_box_aspect(high - low + 1e-6)
        ax.view_init(elev=25, azim=-60)
        ax.tick_params(labelsize=6)
    figure.suptitle(f"{store.attrs.get('env', Path(store_path).name)}: episode {episode} ({last - first} steps)")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def draw_box(ax, low: np.ndarray, high: np.ndarray) -> None:
    """The 12 edges of an axis-aligned box."""
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    for i, j in ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7)):
        ax.plot(*corners[[i, j]].T, color="grey", lw=0.6)


def write_episode_video(store_path: str | os.PathLike, out: str | os.PathLike, episode: int = 0, fps: int = 20) -> Path:
    """The recorded camera images of one episode as an MP4 or GIF (by the suffix of `out`)."""
    import imageio.v3 as iio

    store = load_store(store_path, keys=("point_cloud", "state", "action", "img"))
    first, last = store.episode_bounds(episode)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = store.arrays["img"][first:last]
    if out.suffix == ".gif":
        iio.imwrite(out, frames, duration=1000 / fps, loop=0)
    else:
        iio.imwrite(out, frames, fps=fps)
    return out
