"""What every importer shares: its error, the cloud settings, camera poses read from YAML, and the
store it appends to, one episode per source, so that an interrupted import resumes where it
stopped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
import zarr

from mp1.data.recorder import EpisodeRecorder
from mp1.data.store import COMMITTED_ATTR
from mp1.runtime.perception import Camera, CloudPipeline

#: Store attribute listing the imported sources, each with the episode it became. An entry counts
#: once its episode is committed, so an import killed between the two writes leaves no false entry.
SOURCES_ATTR = "imported_sources"

Pose = npt.NDArray[np.float64]


class RecordingError(ValueError):
    """A recording that cannot be imported as it is: the message names the source, the topic or
    key, and the problem, on one line."""


@dataclass(frozen=True)
class CloudSettings:
    """How an importer's depth frames become clouds, beside the cameras the recording gives."""

    crop_low: tuple[float, float, float]
    crop_high: tuple[float, float, float]
    num_points: int = 1024

    def pipeline(self, cameras: Sequence[Camera]) -> CloudPipeline:
        return CloudPipeline(tuple(cameras), self.crop_low, self.crop_high, self.num_points)


@dataclass(frozen=True)
class Source:
    """One recording that becomes one episode. Known by file name, size and part (an HDF5 demo),
    not by path, so that moving the files does not import them again."""

    name: str
    size: int
    part: str = ""

    @classmethod
    def of(cls, path: Path, part: str = "") -> Source:
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        return cls(path.name, sum(f.stat().st_size for f in files), part)

    def __str__(self) -> str:
        return f"{self.name} {self.part}" if self.part else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "part": self.part}


@dataclass
class Step:
    """One control step of a recording: what `EpisodeRecorder.record` takes, and when it was."""

    state: npt.NDArray[Any]
    action: npt.NDArray[Any]
    depths: list[npt.NDArray[Any]]
    poses: list[Pose | None] | None = None
    time: float | None = None  # seconds since the recording's first message; None without timestamps


@dataclass(frozen=True)
class ImportResult:
    """What became of one source."""

    source: Source
    steps: int = 0
    seconds: float = 0.0  # wall clock of the import
    duration: float | None = None  # seconds of recording the steps span, where it has timestamps
    skipped: bool = False

    def summary(self) -> str:
        """The line an import prints per source."""
        if self.skipped:
            return f"{self.source}: already in the store, skipped"
        span = "" if self.duration is None else f" over {self.duration:.1f} s"
        return f"{self.source}: {self.steps} steps{span}, imported at {self.steps / max(self.seconds, 1e-9):.0f} frames/s"


def rotation_from_quaternions(quaternions: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(..., 3, 3) rotations from (..., 4) quaternions in ROS order (x, y, z, w), normalised first
    (a file's or a message's few digits leave them slightly off unit length)."""
    q = np.asarray(quaternions, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-6):
        raise RecordingError("a quaternion has zero length")
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def transforms(translations: npt.ArrayLike, quaternions: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(..., 4, 4) rigid transforms from (..., 3) translations and (..., 4) quaternions (x, y, z, w)."""
    rotations = rotation_from_quaternions(quaternions)
    result = np.zeros((*rotations.shape[:-2], 4, 4))
    result[..., :3, :3] = rotations
    result[..., :3, 3] = np.asarray(translations, dtype=np.float64)
    result[..., 3, 3] = 1.0
    return result


def pose_from_entry(entry: Mapping[str, Any], what: str) -> Pose:
    """A camera-to-base pose from a YAML entry: ``extrinsics`` (4x4), or ``xyz`` with
    ``quaternion`` (x, y, z, w, ROS order)."""
    if not isinstance(entry, Mapping):
        raise RecordingError(f"{what}: expected a mapping with extrinsics, or xyz and quaternion")
    if "extrinsics" in entry:
        if "xyz" in entry or "quaternion" in entry:
            raise RecordingError(f"{what}: give extrinsics or xyz + quaternion, not both")
        pose = np.asarray(entry["extrinsics"], dtype=np.float64)
        if pose.shape != (4, 4):
            raise RecordingError(f"{what}: extrinsics must be a 4x4 matrix, got shape {pose.shape}")
        return pose
    if "xyz" not in entry or "quaternion" not in entry:
        raise RecordingError(f"{what}: needs extrinsics (4x4, camera-to-base) or xyz + quaternion (x, y, z, w)")
    xyz, quaternion = np.asarray(entry["xyz"], dtype=np.float64), np.asarray(entry["quaternion"], dtype=np.float64)
    if xyz.shape != (3,) or quaternion.shape != (4,):
        raise RecordingError(f"{what}: xyz must be 3 numbers and quaternion 4 (x, y, z, w)")
    return transforms(xyz, quaternion)


def load_yaml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise RecordingError(f"{what} {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RecordingError(f"{what} {path}: expected a mapping at the top level")
    return data


def pipeline_difference(mine: CloudPipeline, theirs: CloudPipeline) -> str:
    """The first setting in which two pipelines differ, for an error message."""
    a, b = mine.to_dict(), theirs.to_dict()
    if [c["name"] for c in a["cameras"]] != [c["name"] for c in b["cameras"]]:
        return f"the camera list ({', '.join(c['name'] for c in a['cameras'])})"
    for camera_a, camera_b in zip(a["cameras"], b["cameras"]):
        if field := next((key for key in camera_a if camera_a[key] != camera_b[key]), None):
            return f"camera {camera_a['name']!r} {field}"
    return next(key for key in a if a[key] != b[key])


def committed_sources(path: Path) -> list[dict[str, Any]]:
    """The sources whose episodes a store has committed (none for a store that is not there yet)."""
    if not (path / "zarr.json").exists() and not (path / ".zgroup").exists():
        return []
    attrs = zarr.open_group(str(path), mode="r").attrs
    episodes = len(attrs.get(COMMITTED_ATTR, {}).get("episode_ends", []))
    return [entry for entry in attrs.get(SOURCES_ATTR, []) if entry["episode"] < episodes]


class StoreAppender:
    """Appends one episode per source through an `EpisodeRecorder`, so that a store is the same
    whatever it was imported from. Each episode is committed on its own and the store lists the
    sources it holds: an import that fails or is killed keeps the finished episodes, and running
    it again skips them and appends the rest. The recorder, and its lock on the store, is opened
    with the first source's pipeline; every later source must have the same."""

    def __init__(self, path: str | os.PathLike, attrs: dict[str, Any]) -> None:
        self.path = Path(path)
        self.attrs = attrs
        self.recorder: EpisodeRecorder | None = None
        self.sources = committed_sources(self.path)

    def holds(self, source: Source) -> bool:
        key = source.to_dict()
        return any({name: entry[name] for name in key} == key for entry in self.sources)

    def append(self, source: Source, pipeline: CloudPipeline, steps: Iterable[Step]) -> int:
        """Records and commits one source's steps; returns how many there were."""
        if self.recorder is None:
            self.recorder = EpisodeRecorder(self.path, pipeline, self.attrs)
        elif pipeline != self.recorder.pipeline:
            raise RecordingError(f"{pipeline_difference(pipeline, self.recorder.pipeline)} differs from the "
                                 f"store's: import it into another store")
        recorder = self.recorder
        count = 0
        for count, step in enumerate(steps, 1):
            try:
                recorder.record(step.state, step.action, depth=step.depths, poses=step.poses)
            except ValueError as error:
                when = "" if step.time is None else f" (t={step.time:.2f} s)"
                raise RecordingError(f"step {count - 1}{when}: {error}") from None
        if count == 0:
            raise RecordingError("no steps to import")
        entry = {**source.to_dict(), "episode": recorder.num_episodes}
        self.sources = [*self.sources, entry]
        recorder.root.attrs[SOURCES_ATTR] = self.sources  # counts once end_episode commits the episode
        recorder.end_episode()
        return count

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> StoreAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Episode:
    """One source opened for import: its cloud pipeline, its steps (read as they are recorded),
    and the seconds of recording they span, where it has timestamps."""

    pipeline: CloudPipeline
    steps: Iterable[Step]
    duration: float | None = None


def import_episodes(
    out: str | os.PathLike, attrs: dict[str, Any],
    sources: Iterable[tuple[Source, Callable[[], AbstractContextManager[Episode]]]],
) -> Iterator[ImportResult]:
    """Imports each source, in order, as one episode of the store at ``out``, skipping the ones it
    holds; yields one result per source as it is committed. ``attrs`` are recorded when the store
    is created. Any error names the source and stops the import; the committed episodes stay."""
    with StoreAppender(out, attrs) as appender:
        for source, open_episode in sources:
            if appender.holds(source):
                yield ImportResult(source, skipped=True)
                continue
            started = time.perf_counter()
            try:
                with open_episode() as episode:
                    steps = appender.append(source, episode.pipeline, episode.steps)
            except ValueError as error:  # ours, the cloud maker's and the store's: all name the problem
                raise RecordingError(f"{source}: {error}") from None
            yield ImportResult(source, steps, time.perf_counter() - started, episode.duration)
