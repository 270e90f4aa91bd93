"""Demonstration stores in DP3's zarr layout, so that stores made by DP3's own scripts load too.

    data/point_cloud  (T, N, 3 or 6) float32   all episodes concatenated, time-major
    data/state        (T, Ds)        float32   the agent_pos of each step
    data/action       (T, Da)        float32
    data/full_state   (T, Df)        optional, the simulator's raw observation
    data/img, data/depth             optional images
    meta/episode_ends (E,)           int64, exclusive end index of each episode

Reading checks everything a training run relies on and names the key and the problem,
including each array against the sha256 recorded when the store was written (stores made
elsewhere, e.g. by DP3's scripts, have none and are checked for shape and values only);
writing goes to a temporary folder renamed into place, so an interrupted write leaves no
half store behind.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from mp1.integrity import content_digest

REQUIRED_KEYS = ("point_cloud", "state", "action")
CHECKSUM_ATTR = "content_sha256"  # {array name: content_digest}, written by write_store
# Written by `EpisodeRecorder` at each commit: {"episode_ends": [...], "sha256": [one digest per episode]}.
# It, not meta/episode_ends, says which steps are committed (steps after its last end are uncommitted).
COMMITTED_ATTR = "committed_episodes"


class StoreError(ValueError):
    """A demonstration store that cannot be used as it is."""


@dataclass
class EpisodeStore:
    arrays: dict[str, np.ndarray]
    episode_ends: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    def episode_bounds(self, index: int) -> tuple[int, int]:
        start = 0 if index == 0 else int(self.episode_ends[index - 1])
        return start, int(self.episode_ends[index])


def load_store(path: str | os.PathLike, keys: Sequence[str] = REQUIRED_KEYS) -> EpisodeStore:
    """Reads and validates `keys` of a store (zarr format 2 or 3); extra keys are ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no demonstration store at {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as error:  # zarr raises several unrelated types for a non-store
        raise StoreError(f"{path} is not a zarr store: {error}") from error
    attrs = dict(root.attrs)
    committed = attrs.get(COMMITTED_ATTR)
    if committed is not None and not committed["episode_ends"]:
        raise StoreError(f"{path}: no episode committed yet (a recording with no finished episode)")
    for group in ("data", "meta"):
        if group not in root:
            raise StoreError(f"{path}: missing group '{group}/'")
    if "episode_ends" not in root["meta"]:
        raise StoreError(f"{path}: missing key 'meta/episode_ends'")
    arrays = {}
    try:
        for key in keys:
            if key not in root["data"]:
                raise StoreError(f"{path}: missing key 'data/{key}'")
            # A recording's committed steps only: a writer killed mid-episode leaves more.
            arrays[key] = np.asarray(root["data"][key][: committed["episode_ends"][-1]] if committed else root["data"][key][:])
        episode_ends = np.asarray(committed["episode_ends"] if committed else root["meta"]["episode_ends"][:])
    except StoreError:
        raise
    except Exception as error:  # a truncated or corrupt chunk: zarr's codecs raise many types
        raise StoreError(f"{path}: unreadable data ({type(error).__name__}: {error}); regenerate the store") from None
    recorded = attrs.get(CHECKSUM_ATTR, {})
    for key, value in {**arrays, "episode_ends": episode_ends}.items():
        if key in recorded and content_digest(value) != recorded[key]:
            raise StoreError(
                f"{path}: '{key}' differs from what was written (a chunk missing or altered); regenerate the store"
            )
    if committed and set(REQUIRED_KEYS) <= set(arrays):
        for index, (start, end) in enumerate(zip([0, *episode_ends[:-1]], episode_ends)):
            if content_digest({key: arrays[key][start:end] for key in REQUIRED_KEYS}) != committed["sha256"][index]:
                raise StoreError(f"{path}: episode {index} differs from what was recorded (a chunk missing or altered)")
    store = EpisodeStore(arrays, episode_ends.astype(np.int64), attrs)
    validate_store(store, str(path))
    return store


def validate_store(store: EpisodeStore, where: str) -> None:
    ends = store.episode_ends
    if ends.ndim != 1 or len(ends) == 0:
        raise StoreError(f"{where}: 'meta/episode_ends' must be a non-empty 1-D array, got shape {ends.shape}")
    if np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise StoreError(f"{where}: 'meta/episode_ends' must be positive and strictly increasing, got {ends.tolist()}")
    lengths = {key: len(value) for key, value in store.arrays.items()}
    if len(set(lengths.values())) > 1:
        raise StoreError(f"{where}: arrays have mismatched lengths {lengths}")
    total = next(iter(lengths.values()))
    if ends[-1] != total:
        raise StoreError(f"{where}: 'meta/episode_ends' ends at {ends[-1]} but the arrays hold {total} steps")
    for key, value in store.arrays.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = np.argwhere(~np.isfinite(value.reshape(len(value), -1)))[0][0]
            raise StoreError(f"{where}: 'data/{key}' contains NaN or inf (first at step {bad})")
    point_cloud = store.arrays.get("point_cloud")
    if point_cloud is not None and (point_cloud.ndim != 3 or point_cloud.shape[-1] not in (3, 6)):
        raise StoreError(f"{where}: 'data/point_cloud' has shape {point_cloud.shape}; expected (T, N, 3 or 6)")
    for key in ("state", "action"):
        if key in store.arrays and store.arrays[key].ndim != 2:
            raise StoreError(f"{where}: 'data/{key}' has shape {store.arrays[key].shape}; expected (T, D)")


def write_store(
    path: str | os.PathLike,
    episodes: Sequence[dict[str, np.ndarray]],
    attrs: dict[str, Any] | None = None,
    zarr_format: int = 3,
) -> None:
    """Writes episodes (each a dict of time-major arrays with the same keys) atomically."""
    if not episodes:
        raise ValueError("no episodes to write")
    path = Path(path)
    remove_dead_writers_leftovers(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        root = zarr.open_group(str(temporary), mode="w", zarr_format=zarr_format)
        data = root.require_group("data")
        digests = {}
        for key in episodes[0]:
            values = np.concatenate([episode[key] for episode in episodes])
            chunks = (min(len(values), 100), *values.shape[1:])
            data.create_array(key, data=values, chunks=chunks)
            digests[key] = content_digest(values)
        ends = np.cumsum([len(episode["action"]) for episode in episodes]).astype(np.int64)
        root.require_group("meta").create_array("episode_ends", data=ends)
        digests["episode_ends"] = content_digest(ends)
        root.attrs.update({**(attrs or {}), CHECKSUM_ATTR: digests})
        validate_store(load_store(temporary, keys=list(episodes[0])), str(temporary))
        previous = path.with_name(f".{path.name}.{os.getpid()}.old")
        if path.exists():
            os.replace(path, previous)
        os.replace(temporary, path)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def trim_uncommitted(root: zarr.Group) -> None:
    """Cuts a recording's arrays back to its committed steps (a writer killed mid-commit may have
    appended some), so that appending resumes right after the last committed episode."""
    ends = root.attrs[COMMITTED_ATTR]["episode_ends"]
    if "data" not in root:
        return
    for _, array in root["data"].arrays():
        if array.shape[0] != (ends[-1] if ends else 0):
            array.resize(((ends[-1] if ends else 0), *array.shape[1:]))


def remove_dead_writers_leftovers(path: Path) -> None:
    """Removes `.<store>.<pid>.tmp` / `.old` folders beside `path` whose writer was killed."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        pid = leftover.name.removeprefix(f".{path.name}.").partition(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
