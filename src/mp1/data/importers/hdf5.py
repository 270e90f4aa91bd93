"""HDF5 demonstrations in the robomimic / LIBERO layout to episodes, one demo each::

    data/demo_N/obs/<camera><suffix>   (T, H, W) or (T, H, W, 1) depth, integer or float
    data/demo_N/obs/<state key>        (T, D) or (T,); several are concatenated in the order given
    data/demo_N/actions                (T, Da)

Demos are imported in numeric order (demo_2 before demo_10). The file holds no calibration, so
the cameras come from a YAML file (`load_cameras`), which also says how the stored depth becomes
metres: robomimic and robosuite may store it normalised (a linear ``depth_scale``) or as the
renderer's z-buffer (``near`` and ``far``), and robosuite's "opengl" image convention stores rows
bottom-up (``flip_vertical``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mp1.data.importers.common import (
    CloudSettings, Episode, ImportResult, RecordingError, Source, Step, import_episodes, load_yaml, pose_from_entry,
)
from mp1.runtime.perception import Camera

try:
    import h5py
except ModuleNotFoundError:
    from mp1.envs import MissingExtraError

    raise MissingExtraError("importing HDF5 demonstrations needs h5py: pip install 'mp1[robot]'") from None

DEMO = re.compile(r"demo_(\d+)")
#: Steps read from the file at once: few enough to bound memory for large frames.
BLOCK = 64
UNITS = {"m": 1.0, "mm": 0.001}
CAMERA_KEYS = ("width", "height", "intrinsics", "fx", "fy", "cx", "cy", "extrinsics", "xyz", "quaternion", "convention",
               "depth_scale", "units", "near", "far", "flip_vertical", "min_depth", "max_depth")


@dataclass(frozen=True)
class DepthCamera:
    """A camera of the file: its calibration and how its stored depth becomes metres.

    ``scale`` is metres per stored unit (default: millimetres for integer frames, metres for
    float ones). Integer frames go to the cloud maker as they are, with ``scale`` as the camera's
    ``depth_scale``; float frames are converted here: ``metres = value * scale``, or from an
    OpenGL z-buffer value ``z`` in [0, 1] with the renderer's clip planes,
    ``metres = near / (1 - z * (1 - near / far))``."""

    name: str
    settings: dict[str, Any]  # Camera's own fields but name and depth_scale
    scale: float | None = None
    near: float | None = None
    far: float | None = None
    flip_vertical: bool = False

    def camera(self, dtype: np.dtype) -> Camera:
        """The calibrated camera, for frames stored as ``dtype``."""
        if self.near is not None and dtype.kind != "f":
            raise RecordingError(f"camera {self.name!r}: near/far convert float z-buffer depth; the file stores {dtype}")
        scale = {} if dtype.kind == "f" or self.scale is None else {"depth_scale": self.scale}
        return Camera(self.name, **self.settings, **scale)

    def frames(self, stored: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Stored frames ``(n, H, W)`` as the cloud maker takes them."""
        if self.flip_vertical:
            stored = stored[:, ::-1]
        if stored.dtype.kind != "f":
            return stored
        if self.near is not None and self.far is not None:
            # In float64: near the far plane, 1 - z is a difference of nearly equal numbers.
            return (self.near / (1.0 - stored.astype(np.float64) * (1.0 - self.near / self.far))).astype(np.float32)
        return stored if self.scale in (None, 1.0) else (stored * self.scale).astype(np.float32)


def load_cameras(path: str | os.PathLike) -> tuple[DepthCamera, ...]:
    """Cameras from YAML, one entry per camera name (the depth key less its suffix)::

        agentview:
          width: 128
          height: 128
          intrinsics: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # or fx:, fy:, cx:, cy:
          extrinsics: [[...], [...], [...], [0, 0, 0, 1]]     # camera-to-base; or xyz: + quaternion: (x, y, z, w)
          convention: opengl        # axes of the extrinsics: opencv (default) or opengl (MuJoCo)
          depth_scale: 1.0          # metres per stored unit, or units: m | mm
          near: 0.01                # instead: float z-buffer depth, with the renderer's clip planes (m)
          far: 5.0
          flip_vertical: true       # rows stored bottom-up
          min_depth: 0.0            # valid depth range, metres (Camera's defaults)
          max_depth: 10.0
    """
    data = load_yaml(path, "cameras")
    return tuple(_depth_camera(str(name), entry, f"camera {name!r} in {path}") for name, entry in data.items())


def _depth_camera(name: str, entry: Any, what: str) -> DepthCamera:
    if not isinstance(entry, dict):
        raise RecordingError(f"{what}: expected a mapping of settings")
    if unknown := sorted(set(entry) - set(CAMERA_KEYS)):
        raise RecordingError(f"{what}: unknown setting {unknown[0]!r} (known: {', '.join(CAMERA_KEYS)})")
    if missing := [key for key in ("width", "height") if key not in entry]:
        raise RecordingError(f"{what}: missing {missing[0]}")
    if "intrinsics" in entry:
        intrinsics = entry["intrinsics"]
    elif all(key in entry for key in ("fx", "fy", "cx", "cy")):
        intrinsics = [[entry["fx"], 0.0, entry["cx"]], [0.0, entry["fy"], entry["cy"]], [0.0, 0.0, 1.0]]
    else:
        raise RecordingError(f"{what}: needs intrinsics (3x3) or fx, fy, cx and cy")
    if sum(key in entry for key in ("depth_scale", "units", "near")) > 1:
        raise RecordingError(f"{what}: give one of depth_scale, units or near/far")
    if ("near" in entry) != ("far" in entry):
        raise RecordingError(f"{what}: near and far go together")
    if "units" in entry and entry["units"] not in UNITS:
        raise RecordingError(f"{what}: units must be one of {', '.join(UNITS)}, got {entry['units']!r}")
    scale = UNITS[entry["units"]] if "units" in entry else entry.get("depth_scale")
    settings = {key: entry[key] for key in ("width", "height", "convention", "min_depth", "max_depth") if key in entry}
    settings.update(intrinsics=intrinsics, extrinsics=pose_from_entry(entry, what))
    camera = DepthCamera(name, settings, scale, entry.get("near"), entry.get("far"), bool(entry.get("flip_vertical", False)))
    camera.camera(np.dtype(np.float32))  # the calibration's own errors, now rather than at the first demo
    return camera


@dataclass(frozen=True)
class HDF5Settings:
    """What to read from each demo: ``<camera name><depth_key_suffix>`` under obs/ per camera,
    the state keys under obs/ (concatenated), and the actions."""

    cameras: tuple[DepthCamera, ...]
    state_keys: tuple[str, ...]
    depth_key_suffix: str = "_depth"
    action_key: str = "actions"

    def __post_init__(self) -> None:
        if not self.cameras:
            raise RecordingError("give at least one camera")
        if not self.state_keys:
            raise RecordingError("give at least one state key")


def import_hdf5(
    path: str | os.PathLike, out: str | os.PathLike, settings: HDF5Settings, cloud: CloudSettings
) -> Iterator[ImportResult]:
    """Imports each demo of the file, in numeric order, as one episode of the store at ``out``;
    demos the store already holds are skipped, so that an interrupted import resumes."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"no HDF5 file at {path}")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise RecordingError(f"{path.name}: cannot read it as HDF5, truncated or damaged? ({error})") from None
    with file:
        if "data" not in file:
            raise RecordingError(f"{path.name}: no 'data' group (expected robomimic's data/demo_N layout)")
        demos = sorted((key for key in file["data"] if DEMO.fullmatch(key)), key=lambda key: int(key[5:]))
        if not demos:
            raise RecordingError(f"{path.name}: no data/demo_N groups")
        attrs = {"imported_from": "hdf5", "import_settings": {
            "state_keys": list(settings.state_keys), "depth_key_suffix": settings.depth_key_suffix,
            "action_key": settings.action_key, **dataclasses.asdict(cloud)}}
        yield from import_episodes(out, attrs, [
            (Source.of(path, demo), functools.partial(_open_demo, file["data"][demo], demo, settings, cloud))
            for demo in demos
        ])


def _dataset(group: Any, key: str) -> Any:
    """The dataset at ``key`` in a demo, or an error that lists what is there instead."""
    node = group.get(key)
    if isinstance(node, h5py.Dataset):
        return node
    parent = key.rpartition("/")[0]
    siblings = group.get(parent) if parent else group
    listing = ", ".join(sorted(siblings)) if isinstance(siblings, h5py.Group) else "nothing"
    raise RecordingError(f"no key {key} ({parent + '/' if parent else 'the demo'} has {listing})")


def _open_demo(group: Any, demo: str, settings: HDF5Settings, cloud: CloudSettings) -> AbstractContextManager[Episode]:
    actions = _dataset(group, settings.action_key)
    length = actions.shape[0] if actions.ndim else 0
    states = [_dataset(group, f"obs/{key}") for key in settings.state_keys]
    depths = [_dataset(group, f"obs/{camera.name}{settings.depth_key_suffix}") for camera in settings.cameras]
    for dataset in [*states, *depths]:
        if dataset.shape[:1] != (length,):
            raise RecordingError(f"{dataset.name} has {dataset.shape[0] if dataset.ndim else 0} steps, "
                                 f"{actions.name} {length}")
    for dataset in depths:
        if not (dataset.ndim == 3 or (dataset.ndim == 4 and dataset.shape[3] == 1)):
            raise RecordingError(f"{dataset.name} has shape {dataset.shape}; expected (T, H, W) or (T, H, W, 1) depth")
    state = np.concatenate([_read(dataset).reshape(length, -1) for dataset in states], axis=1)
    action = _read(actions).reshape(length, -1)
    cameras = [camera.camera(dataset.dtype) for camera, dataset in zip(settings.cameras, depths)]
    return nullcontext(Episode(cloud.pipeline(cameras), _steps(settings.cameras, depths, state, action)))


def _read(dataset: Any, rows: slice = slice(None)) -> npt.NDArray[Any]:
    try:
        return np.asarray(dataset[rows])
    except OSError as error:
        raise RecordingError(f"cannot read {dataset.name}, truncated or damaged? ({error})") from None


def _steps(
    cameras: Sequence[DepthCamera], depths: Sequence[Any], state: npt.NDArray[Any], action: npt.NDArray[Any]
) -> Iterator[Step]:
    for start in range(0, len(action), BLOCK):
        rows = slice(start, start + BLOCK)
        blocks = [camera.frames(_read(dataset, rows).reshape(-1, *dataset.shape[1:3]))
                  for camera, dataset in zip(cameras, depths)]
        for offset in range(len(blocks[0])):
            yield Step(state[start + offset], action[start + offset], [block[offset] for block in blocks])
