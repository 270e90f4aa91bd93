"""Recording a robot's own demonstrations, one control step at a time, into a store that trains
like the simulator's (DP3's zarr layout, `mp1.data.store`).

    recorder = EpisodeRecorder("demos/pick.zarr", pipeline)       # appends when the store exists
    for episode in range(10):
        while not done:
            recorder.record(state=joints, action=command, depth=[frame])   # or point_cloud=cloud
        recorder.end_episode()                                    # committed: survives any crash

Every finished episode is committed on its own: its steps are appended, then the root's
attributes (one file, replaced atomically by zarr) record the new episode ends and the episode's
checksums. That write is the commit, so a writer killed at any moment loses at most the episode
in progress: readers and the next recorder see the committed episodes only, and the next
recorder trims the uncommitted steps and appends after them. Clouds made from depth frames come
from the same `CloudMaker` the runtime uses at deployment, and the store records the pipeline
(cameras, crop box, point count, colour, units), which every policy trained on it carries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from mp1.data.store import COMMITTED_ATTR, StoreError, load_store, trim_uncommitted
from mp1.integrity import content_digest
from mp1.lock import FolderLock
from mp1.runtime.perception import CloudMaker, CloudPipeline

# Steps per chunk along time: small enough that committing an episode rewrites little, large
# enough that a store of a few hundred episodes stays a few thousand files.
TIME_CHUNK = 64


class EpisodeRecorder:
    """Appends episodes to a store. Give a `pipeline` to record raw depth frames (made into
    clouds here), or none to record ready-made clouds; either way the store's observation
    settings are fixed by its first episode and checked for every later one."""

    def __init__(self, path: str | os.PathLike, pipeline: CloudPipeline | None = None, attrs: dict[str, Any] | None = None):
        self.path = Path(path)
        self.pipeline = pipeline
        self.cloud_maker = CloudMaker(pipeline) if pipeline is not None else None
        # One writer per store, freed if it is killed; beside the store, which zarr clears on creation.
        self._lock = FolderLock(self.path.parent, name=f".{self.path.name}.lock", holds=self.path).acquire()
        try:
            self.root = self._open(attrs or {})
        except BaseException:
            self._lock.release()
            raise
        self.steps: list[dict[str, np.ndarray]] = []

    def _open(self, attrs: dict[str, Any]) -> zarr.Group:
        if (self.path / "zarr.json").exists() or (self.path / ".zgroup").exists():
            root = zarr.open_group(str(self.path), mode="r+")
            if COMMITTED_ATTR not in root.attrs:
                raise StoreError(f"{self.path} was not written by a recorder; record into a new store")
            recorded = root.attrs.get("observation", {}).get("pipeline")
            theirs = None if recorded is None else CloudPipeline.from_dict(recorded)
            if theirs != self.pipeline:
                if theirs is None or self.pipeline is None:
                    differs = "one of them has no pipeline"
                else:
                    mine = self.pipeline.to_dict()
                    differs = "differs in " + ", ".join(
                        f"{key} (store {value!r}, given {mine[key]!r})" if key != "cameras" else key
                        for key, value in theirs.to_dict().items() if value != mine[key])
                raise StoreError(
                    f"{self.path} was recorded with another cloud pipeline ({differs}); "
                    "record into a new store or pass the same pipeline"
                )
            trim_uncommitted(root)
            return root
        root = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        observation = {} if self.pipeline is None else {
            "pipeline": self.pipeline.to_dict(), "num_points": self.pipeline.num_points,
            "crop_low": list(self.pipeline.crop_low), "crop_high": list(self.pipeline.crop_high),
        }
        root.attrs.update({**attrs, "source": "recording", "observation": observation,
                           COMMITTED_ATTR: {"episode_ends": [], "sha256": []}})
        return root

    @property
    def num_episodes(self) -> int:
        """Committed episodes in the store."""
        return len(self.root.attrs[COMMITTED_ATTR]["episode_ends"])

    def record(
        self, state: Any, action: Any, *, depth: np.ndarray | Sequence[np.ndarray] | None = None,
        colour: np.ndarray | Sequence[np.ndarray] | None = None, poses: Sequence[np.ndarray] | None = None,
        point_cloud: np.ndarray | None = None,
    ) -> None:
        """One control step: the robot's state, the action commanded at it, and the observation:
        depth frame(s) of the pipeline's cameras (with colour and per-step camera poses when
        they apply) or, for a recorder without a pipeline, a ready (N, 3|6) cloud."""
        if self.cloud_maker is not None:
            if point_cloud is not None or depth is None:
                raise ValueError("this recorder makes clouds from depth frames: pass depth=, not point_cloud=")
            point_cloud = self.cloud_maker(depth, colour, poses)
        elif point_cloud is None or depth is not None:
            raise ValueError("this recorder has no cloud pipeline: pass point_cloud= (or create it with a pipeline)")
        step = {"point_cloud": as_array("point_cloud", point_cloud, 2), "state": as_array("state", state, 1),
                "action": as_array("action", action, 1)}
        if self.steps:
            for key, value in step.items():
                if value.shape != self.steps[0][key].shape:
                    raise ValueError(f"'{key}' has shape {value.shape}; earlier steps of this episode had {self.steps[0][key].shape}")
        self.steps.append(step)

    def end_episode(self) -> int:
        """Commits the episode recorded since the last call; returns the committed episode count."""
        if not self.steps:
            raise ValueError("no steps recorded since the last episode ended")
        episode = {key: np.stack([step[key] for step in self.steps]) for key in self.steps[0]}
        committed = self.root.attrs[COMMITTED_ATTR]
        start = committed["episode_ends"][-1] if committed["episode_ends"] else 0
        data = self.root.require_group("data")
        for key, values in episode.items():
            if key in data:
                array = data[key]
                if array.shape[1:] != values.shape[1:]:
                    raise ValueError(f"'{key}' has shape {values.shape[1:]} per step; the store holds {array.shape[1:]}")
                array.resize((start + len(values), *array.shape[1:]))
            else:
                array = data.create_array(key, shape=values.shape, dtype=values.dtype, chunks=(TIME_CHUNK, *values.shape[1:]))
            array[start:] = values
        ends = [*committed["episode_ends"], start + len(self.steps)]
        meta = self.root.require_group("meta")
        if "episode_ends" in meta:  # DP3's readers look here; the commit below is what counts
            del meta["episode_ends"]
        meta.create_array("episode_ends", data=np.asarray(ends, dtype=np.int64))
        self.root.attrs[COMMITTED_ATTR] = {"episode_ends": ends, "sha256": [*committed["sha256"], content_digest(episode)]}
        self.steps = []
        return len(ends)

    def discard_episode(self) -> None:
        """Drops the steps recorded since the last committed episode (a failed demonstration)."""
        self.steps = []

    def close(self) -> None:
        """Releases the store; an episode not ended is discarded."""
        self.steps = []
        self._lock.release()

    def __enter__(self) -> "EpisodeRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_array(key: str, value: Any, ndim: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"'{key}' has shape {array.shape}; expected {ndim} non-empty dimension(s)")
    if not np.isfinite(array).all():
        raise ValueError(f"'{key}' contains NaN or inf")
    return array
