"""The observation a policy takes at one control step, declared once: by its config (state and
point dimensions, observation steps) and by its file's record of the training data (point count,
cloud pipeline). The runner and `mp1 serve` check every step against it with one function, so a
bad step gets the same one-line error wherever it arrives, and never enters a history."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from mp1.serving.wire import FRAME_KEYS


@dataclass(frozen=True)
class ObservationContract:
    state_dim: int
    point_dim: int
    n_obs_steps: int
    num_points: int | None = None  # None: the file records none; a runner then holds each episode to its first count
    pipeline: dict[str, Any] | None = None  # the training data's cloud pipeline: raw depth is accepted when set

    @classmethod
    def of(cls, config: Any, extra: Mapping[str, Any] | None = None) -> "ObservationContract":
        """From a policy config and a policy file's `extra` (what `mp1 train` records)."""
        extra = extra or {}
        return cls(config.state_dim, config.point_dim, config.n_obs_steps,
                   (extra.get("observation") or {}).get("num_points"), extra.get("pipeline"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_step(self, obs: Any, num_points: int | None = None) -> dict[str, Any]:
        """One step `{"point_cloud": (N, point_dim) floats, "agent_pos": (state_dim,) floats}`, or with
        a pipeline `{"depth": ..., "colour": ..., "camera_poses": ..., "agent_pos": ...}` (the frames
        are checked against the cameras when the cloud is made). `num_points` holds a contract that
        records no count to the one an episode started with. Returns float32 copies (frames as
        they came); raises ValueError naming the key."""
        if not isinstance(obs, Mapping):
            raise ValueError("an observation must be a map with 'point_cloud' (or 'depth') and 'agent_pos'")
        checked: dict[str, Any] = {"agent_pos": finite_floats("agent_pos", obs.get("agent_pos"), (self.state_dim,))}
        if "point_cloud" not in obs and "depth" in obs:
            if self.pipeline is None:
                raise ValueError("this policy records no cloud pipeline: send 'point_cloud', not 'depth'")
            for key in FRAME_KEYS:
                if key in obs:
                    checked[key] = frames(key, obs[key])
            return checked
        count = self.num_points or num_points
        checked["point_cloud"] = finite_floats("point_cloud", obs.get("point_cloud"), (count, self.point_dim))
        return checked


def finite_floats(key: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    described = "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    if value is None:
        raise ValueError(f"'obs.{key}' is missing; expected an array of shape {described}")
    array = np.asarray(value)
    fits = array.ndim == len(shape) and all(d is None or d == got for d, got in zip(shape, array.shape))
    if not fits or array.size == 0:
        raise ValueError(f"'obs.{key}' has shape {array.shape}; expected {described}")
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        raise ValueError(f"'obs.{key}' must be finite floats (dtype {array.dtype})")
    return np.array(array, dtype=np.float32)  # a copy: a driver may reuse its buffers


def frames(key: str, value: Any) -> np.ndarray | list[np.ndarray]:
    """A frame, or a list of frames (one per camera), as numeric arrays."""
    listed = value if isinstance(value, (list, tuple)) else [value]
    arrays = [np.asarray(frame) for frame in listed]
    if not arrays or any(array.dtype.kind not in "uif" for array in arrays):
        raise ValueError(f"'obs.{key}' must be a numeric array, or a list of them (one per camera)")
    return arrays if isinstance(value, (list, tuple)) else arrays[0]
