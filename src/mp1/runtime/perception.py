"""Raw depth frames to a policy's point cloud in a few milliseconds, from one serialisable definition.

One :class:`CloudPipeline` (cameras, workspace box, point count) is meant to serve a dataset
importer, the robot at deployment and the policy file that records it, so that training and
deployment see clouds made the same way. :class:`CloudMaker` turns it into a fast function::

    maker = CloudMaker(pipeline)          # precomputes rays and crop bounds, once
    cloud = maker(depth_uint16_mm)        # (num_points, 3) float32, base frame

Why it is fast (versus ``depth_to_points`` + ``crop`` + ``farthest_point_sample``: 50-100 ms):

* A pixel's ray is fixed, so the depths that put its point inside the crop box form an interval,
  computed once per pixel. Cropping a frame is then two comparisons on the raw frame (uint16
  included); points are built only for what passes.
* Farthest point sampling (FPS) costs time in proportion to its input, so it gets a few thousand
  candidates, not every in-crop pixel. First, one pixel per cell of (square pixel block about
  ``voxel_size`` wide at the box, depth bin of ``voxel_size``): neighbours on one surface merge,
  while a pixel off the surface (an edge, a thin part, a single-pixel outlier), which FPS seeks
  and a pixel stride would drop, keeps a cell of its own. Then, above ``max_candidates``, one
  point per voxel of a grid grown until they fit. FPS picks ``num_points`` among the candidates.
* A small scene (a few objects, the table cropped out) can span fewer cells than ``num_points``.
  Its candidates are then those cells' pixels, which keep every isolated part, plus a regular
  stride over all its in-crop pixels, which fills the surfaces, up to ``max_candidates`` in all
  (pipeline ``version`` 2; version 1 gave FPS every in-crop point: 14,000 points cost 3-5 ms
  more, for a cloud that covers the scene no better).

Camera conventions are those of :mod:`mp1.runtime.pointcloud`: the extrinsics' rotation is
camera-to-base in ``"opencv"`` axes (looks along +z, y down: real cameras) or ``"opengl"`` axes
(MuJoCo: looks along -z, y up), and depth is planar z-depth.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import fpsample
import numpy as np
import numpy.typing as npt

from mp1.runtime.pointcloud import _CV_TO_GL, CameraConvention, farthest_point_sample, intrinsics_from_fovy

Matrix = tuple[tuple[float, ...], ...]
Vector3 = tuple[float, float, float]
Float32Array = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
Frames = npt.ArrayLike | Sequence[npt.ArrayLike]
Poses = npt.ArrayLike | Sequence[npt.ArrayLike | None]

#: Largest deviation of ``R.T @ R`` from the identity accepted in a rotation: calibration files
#: keep far more digits than that; a looser matrix would shear the cloud.
ROTATION_TOLERANCE = 1e-3

#: Height of fpsample's KD-tree over the candidates: with 1-3 thousand points, 4 levels sample
#: 0.3-0.6 ms faster than the 5 that suit full-resolution clouds.
_FPS_TREE_HEIGHT = 4

#: :func:`_first_per_cell` indexes a table by cell when it has at most this many cells per entry:
#: filling and scanning the table then costs less than sorting the entries' runs.
_DENSE_CELLS_PER_ENTRY = 4

#: A float frame whose median positive depth exceeds this (metres) was surely given in millimetres.
_MILLIMETRE_HINT_M = 20.0


def _matrix(value: Any, size: int, what: str) -> Matrix:
    """``value`` as a ``size`` x ``size`` tuple of finite floats (hashable, JSON-friendly)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a {size}x{size} matrix of numbers") from None
    if array.shape != (size, size) or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be a finite {size}x{size} matrix, got shape {array.shape}")
    return tuple(tuple(float(x) for x in row) for row in array)


def _vector3(value: Any, what: str) -> Vector3:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 3 numbers, got {value!r}") from None
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be 3 finite numbers, got {value!r}")
    x, y, z = (float(v) for v in array)
    return x, y, z


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_pose(matrix: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    """A 4x4 rigid transform; a scaled, sheared or mirrored rotation is refused, since it would
    silently distort the cloud."""
    pose = np.asarray(matrix, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise ValueError(f"{what} must be a finite 4x4 transform, got shape {pose.shape}")
    if not np.allclose(pose[3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError(f"{what}: last row must be [0, 0, 0, 1], got {pose[3].tolist()}")
    rot = pose[:3, :3]
    error = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if error > ROTATION_TOLERANCE or np.linalg.det(rot) <= 0:
        raise ValueError(f"{what}: the 3x3 block is not a rotation (max |R^T R - I| = {error:.2g}, "
                         f"det = {np.linalg.det(rot):.3f})")
    return pose


def _check_keys(data: Any, cls: type, what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(data).__name__}")
    fields = dataclasses.fields(cls)
    required = {field.name for field in fields if field.default is dataclasses.MISSING}
    if missing := sorted(required - set(data)):
        raise ValueError(f"{what}: missing {', '.join(missing)}")
    if unknown := sorted(set(data) - {field.name for field in fields}):
        raise ValueError(f"{what}: unknown {', '.join(map(str, unknown))}")


@dataclass(frozen=True)
class Camera:
    """One calibrated depth camera.

    Args:
        name: unique within a pipeline; errors name it.
        width, height: image size in pixels; frames must match exactly.
        intrinsics: 3x3 pinhole matrix ``K`` (OpenCV pixel convention: pixel centres at integer
            coordinates, row 0 at the top).
        extrinsics: 4x4 camera-to-base transform: the optical centre and camera axes in the
            robot's base frame (a hand-eye calibration).
        convention: axes of the extrinsics' rotation, ``"opencv"`` or ``"opengl"`` (MuJoCo).
        depth_scale: metres per unit of integer frames (0.001 for uint16 millimetres); float
            frames are taken as metres.
        min_depth, max_depth: valid z-depth in metres. Pixels outside, zero, NaN or inf are
            dropped, never turned into points.

    The matrices may be given as arrays; they are stored as tuples, so a Camera is hashable.
    """

    name: str
    width: int
    height: int
    intrinsics: Matrix
    extrinsics: Matrix
    convention: CameraConvention = "opencv"
    depth_scale: float = 0.001
    min_depth: float = 0.0
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"camera name must be a non-empty string, got {self.name!r}")
        what = f"camera {self.name!r}"
        for size_name in ("width", "height"):
            size = getattr(self, size_name)
            if not _is_int(size) or size < 1:
                raise ValueError(f"{what}: {size_name} must be a positive integer, got {size!r}")
            object.__setattr__(self, size_name, int(size))
        k = _matrix(self.intrinsics, 3, f"{what}: intrinsics")
        if k[0][0] <= 0 or k[1][1] <= 0:
            raise ValueError(f"{what}: focal lengths must be positive, got fx={k[0][0]}, fy={k[1][1]}")
        if k[1][0] != 0 or k[2] != (0.0, 0.0, 1.0):
            raise ValueError(f"{what}: intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {k}")
        object.__setattr__(self, "intrinsics", k)
        pose = _check_pose(self.extrinsics, f"{what}: extrinsics")
        object.__setattr__(self, "extrinsics", _matrix(pose, 4, f"{what}: extrinsics"))
        if self.convention not in ("opencv", "opengl"):
            raise ValueError(f"{what}: convention must be 'opencv' or 'opengl', got {self.convention!r}")
        for number_name in ("depth_scale", "min_depth", "max_depth"):
            value = getattr(self, number_name)
            if not _is_number(value) or not math.isfinite(value):
                raise ValueError(f"{what}: {number_name} must be a finite number, got {value!r}")
            object.__setattr__(self, number_name, float(value))
        if self.depth_scale <= 0:
            raise ValueError(f"{what}: depth_scale must be positive, got {self.depth_scale}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"{what}: need 0 <= min_depth < max_depth, got {self.min_depth} and {self.max_depth}")

    @classmethod
    def from_mujoco(
        cls, name: str, width: int, height: int, fovy_deg: float, pos: npt.ArrayLike, xmat: npt.ArrayLike,
        **settings: Any,
    ) -> Camera:
        """A simulated camera from MuJoCo's ``cam_fovy``, ``cam_xpos`` and ``cam_xmat`` (OpenGL
        axes, as :func:`mp1.envs.base.mujoco_camera` returns them); ``settings`` as for Camera."""
        extrinsics = np.eye(4)
        extrinsics[:3, :3] = np.asarray(xmat, dtype=np.float64).reshape(3, 3)
        extrinsics[:3, 3] = np.asarray(pos, dtype=np.float64).reshape(3)
        intrinsics = _matrix(intrinsics_from_fovy(fovy_deg, height, width), 3, f"camera {name!r}: intrinsics")
        return cls(name, width, height, intrinsics, _matrix(extrinsics, 4, f"camera {name!r}: extrinsics"),
                   convention="opengl", **settings)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: matrices as nested lists."""
        data = dataclasses.asdict(self)
        data["intrinsics"] = [list(row) for row in self.intrinsics]
        data["extrinsics"] = [list(row) for row in self.extrinsics]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Camera:
        name = data.get("name", "?") if isinstance(data, Mapping) else "?"
        _check_keys(data, cls, f"camera {name!r}")
        return cls(**data)


@dataclass(frozen=True)
class CloudPipeline:
    """Everything that defines how depth frames become a policy's point cloud.

    Args:
        cameras: one or more; their points are fused in the base frame before the crop and the
            sampling, so a multi-camera cloud covers the union of the views.
        crop_low, crop_high: workspace box in the base frame, metres.
        num_points: points per cloud.
        colour: append RGB in [0, 1] (``(num_points, 6)``); calls then need colour images.
        voxel_size: metres; the scale of the candidate reduction (module docstring). Smaller
            keeps more candidates before the cap, at a cost in time.
        max_candidates: at most this many candidates enter farthest point sampling: it bounds
            the time; more follow an exact sample more closely.
        version: how a small scene is sampled (module docstring). A recorded pipeline without
            one was written by version 1 and keeps making its clouds that way, so a policy sees
            at deployment the clouds it was trained on.

    Defaults measured on Meta-World frames (``benchmarks/perception.py``).
    """

    cameras: tuple[Camera, ...]
    crop_low: Vector3
    crop_high: Vector3
    num_points: int = 1024
    colour: bool = False
    voxel_size: float = 0.01
    max_candidates: int = 2500
    version: int = 2

    def __post_init__(self) -> None:
        cameras = tuple(self.cameras) if isinstance(self.cameras, Sequence) else ()
        if not cameras or not all(isinstance(camera, Camera) for camera in cameras):
            raise ValueError("cameras must be a non-empty sequence of Camera")
        names = [camera.name for camera in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        object.__setattr__(self, "cameras", cameras)
        low, high = _vector3(self.crop_low, "crop_low"), _vector3(self.crop_high, "crop_high")
        if not all(a < b for a, b in zip(low, high, strict=True)):
            raise ValueError(f"crop_low must be below crop_high on every axis, got {low} and {high}")
        object.__setattr__(self, "crop_low", low)
        object.__setattr__(self, "crop_high", high)
        if not _is_int(self.num_points) or self.num_points < 1:
            raise ValueError(f"num_points must be a positive integer, got {self.num_points!r}")
        object.__setattr__(self, "num_points", int(self.num_points))
        if not isinstance(self.colour, (bool, np.bool_)):
            raise ValueError(f"colour must be true or false, got {self.colour!r}")
        object.__setattr__(self, "colour", bool(self.colour))
        if not _is_number(self.voxel_size) or not 0 < self.voxel_size < math.inf:
            raise ValueError(f"voxel_size must be a positive number of metres, got {self.voxel_size!r}")
        object.__setattr__(self, "voxel_size", float(self.voxel_size))
        if not _is_int(self.max_candidates) or self.max_candidates < self.num_points:
            raise ValueError(f"max_candidates must be an integer >= num_points ({self.num_points}), got "
                             f"{self.max_candidates!r}; about 2.5 x num_points keeps the coverage")
        object.__setattr__(self, "max_candidates", int(self.max_candidates))
        if not _is_int(self.version) or self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version!r}")
        object.__setattr__(self, "version", int(self.version))
        if self._cell_bits() + self._index_bits() > 63:
            raise ValueError(f"voxel_size {self.voxel_size} m is too fine for this crop box or depth range")

    def _index_bits(self) -> int:
        """Bits numbering every pixel of every camera, packed below a cell id for sorting."""
        return sum(camera.width * camera.height for camera in self.cameras).bit_length()

    def _cell_bits(self) -> int:
        """Bits of the largest cell id: a voxel of the box, or a (pixel, depth bin) of a camera."""
        voxels = int(np.prod(_voxel_counts(self.crop_low, self.crop_high, self.voxel_size)))
        pixel_cells = [camera.width * camera.height * _depth_bins(camera, self.voxel_size) for camera in self.cameras]
        return max(voxels, *pixel_cells).bit_length()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; :meth:`from_dict` reads it back (e.g. from a policy file)."""
        data = dataclasses.asdict(self)
        data["cameras"] = [camera.to_dict() for camera in self.cameras]
        data["crop_low"], data["crop_high"] = list(self.crop_low), list(self.crop_high)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CloudPipeline:
        _check_keys(data, cls, "cloud pipeline")
        cameras = data["cameras"]
        if not isinstance(cameras, Sequence) or isinstance(cameras, str):
            raise ValueError("cloud pipeline: cameras must be a list of camera dicts")
        cameras = tuple(Camera.from_dict(camera) for camera in cameras)
        return cls(**{"version": 1, **data, "cameras": cameras})  # no version: written by version 1


def _voxel_counts(low: Vector3, high: Vector3, voxel: float) -> IndexArray:
    """Voxels per axis of the box; a spare one takes points that rounding puts just past ``high``."""
    return np.floor((np.asarray(high) - np.asarray(low)) / voxel).astype(np.int64) + 2


def _depth_bins(camera: Camera, voxel: float) -> int:
    return int(camera.max_depth / voxel) + 1


def _depth_interval(
    rays: Float32Array, pos: Float32Array, low: Vector3, high: Vector3, min_depth: float, max_depth: float
) -> tuple[Float32Array, Float32Array]:
    """Per ray, the z-depths that put ``pos + depth * ray`` inside the box (slab method), within
    the camera's valid range; empty where ``enter > leave``."""
    count = rays.shape[1]
    enter = np.full(count, max(min_depth, float(np.finfo(np.float32).tiny)), dtype=np.float32)
    leave = np.full(count, max_depth, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            # A ray parallel to a slab gives +-inf: every depth or none, as it should.
            to_low = np.float32(low[axis] - pos[axis]) / rays[axis]
            to_high = np.float32(high[axis] - pos[axis]) / rays[axis]
            np.fmax(enter, np.fmin(to_low, to_high), out=enter)
            np.fmin(leave, np.fmax(to_low, to_high), out=leave)
    return enter, leave


def _frame_bounds(
    enter: Float32Array, leave: Float32Array, dtype: np.dtype, depth_scale: float
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The depth interval in the frame's own units and dtype, so that a frame is cropped as it
    comes (a uint16 frame is never converted in full). Integer zero is never inside."""
    if dtype.kind == "f":
        return enter.astype(dtype), leave.astype(dtype)
    # float32 holds every integer up to 2**24: 16 km in millimetres.
    top = np.float32(min(np.iinfo(dtype).max, 2**24))
    low = np.ceil(enter / np.float32(depth_scale))
    high = np.floor(leave / np.float32(depth_scale))
    empty = ~(low <= high) | (low > top)
    np.clip(low, 1, top, out=low)
    np.clip(high, 0, top, out=high)
    low[empty], high[empty] = top, 0
    return low.astype(dtype), high.astype(dtype)


class _Geometry(NamedTuple):
    """What a camera pose determines: base-frame rays ``(3, H*W)``, optical centre, per-pixel
    depth interval inside the crop box, per-pixel block id times the depth bin count, and the
    number of (block, depth bin) cells."""

    rays: Float32Array
    pos: Float32Array
    interval: tuple[Float32Array, Float32Array]
    block_cells: IndexArray
    cell_count: int


#: One camera's in-crop pixels (row-major indices), their raw readings, and their geometry.
_Selection = tuple[IndexArray, npt.NDArray[Any], _Geometry]


class _View:
    """One camera's precomputed geometry: per-pixel rays in the base frame, the depth interval
    that puts each pixel inside the crop box, and the pixel blocks of the first reduction."""

    def __init__(self, camera: Camera, low: Vector3, high: Vector3, voxel_size: float) -> None:
        self.camera = camera
        self._low, self._high = low, high
        u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
        pixels = np.stack([u.reshape(-1), v.reshape(-1), np.ones(u.size)]).astype(np.float64)
        # Planar depth: a camera-frame ray has z = 1, so the point is ``depth * ray``.
        self._camera_rays = np.linalg.solve(np.asarray(camera.intrinsics), pixels).astype(np.float32)
        self._voxel_size = voxel_size
        self._depth_bins = _depth_bins(camera, voxel_size)
        self._block_cells: dict[int, IndexArray] = {}
        self._geometry_at_extrinsics = self._geometry(camera.extrinsics)
        self._bounds: dict[np.dtype, tuple[npt.NDArray[Any], npt.NDArray[Any]]] = {}

    def _geometry(self, extrinsics: npt.ArrayLike) -> _Geometry:
        """Everything that depends on the camera's pose."""
        camera = self.camera
        pose = np.asarray(extrinsics, dtype=np.float64)
        rot = pose[:3, :3] @ _CV_TO_GL if camera.convention == "opengl" else pose[:3, :3]
        rays = rot.astype(np.float32) @ self._camera_rays
        pos = pose[:3, 3].astype(np.float32)
        interval = _depth_interval(rays, pos, self._low, self._high, camera.min_depth, camera.max_depth)
        # Pixel blocks about a voxel wide at the distance of the box's centre.
        distance = max(float(np.linalg.norm(np.add(self._low, self._high) / 2 - pos)), self._voxel_size)
        block = max(1, int(self._voxel_size * min(camera.intrinsics[0][0], camera.intrinsics[1][1]) / distance))
        if block not in self._block_cells:
            u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
            blocks = (v // block) * -(-camera.width // block) + u // block
            self._block_cells[block] = blocks.reshape(-1).astype(np.int64) * self._depth_bins
        block_cells = self._block_cells[block]
        return _Geometry(rays, pos, interval, block_cells, int(block_cells[-1]) + self._depth_bins)

    def select(
        self, depth: npt.NDArray[Any], pose: npt.ArrayLike | None
    ) -> _Selection:
        """The valid pixels whose point lies in the crop box (row-major indices), their readings
        (the frame's dtype), and the geometry that places them. A per-call ``pose`` recomputes
        the geometry (some ms per 640x480 camera)."""
        flat = depth.reshape(-1)
        if pose is None:
            geometry = self._geometry_at_extrinsics
            if flat.dtype not in self._bounds:
                self._bounds[flat.dtype] = _frame_bounds(*geometry.interval, flat.dtype, self.camera.depth_scale)
            bounds = self._bounds[flat.dtype]
        else:
            geometry = self._geometry(_check_pose(pose, f"camera {self.camera.name!r}: pose"))
            bounds = _frame_bounds(*geometry.interval, flat.dtype, self.camera.depth_scale)
        inside = flat >= bounds[0]
        inside &= flat <= bounds[1]
        pixels = np.flatnonzero(inside)
        if pixels.size == 0:
            self._explain_empty(flat)
        return pixels, flat[pixels], geometry

    def metres(self, readings: npt.NDArray[Any]) -> Float32Array:
        metres = readings.astype(np.float32)
        if readings.dtype.kind != "f":
            metres *= np.float32(self.camera.depth_scale)
        return metres

    def cells(self, pixels: IndexArray, readings: npt.NDArray[Any], geometry: _Geometry) -> IndexArray:
        """Each selected pixel's cell of the first reduction: (pixel block, depth bin). Binned
        from the raw readings, so that only the reduced pixels need converting to metres."""
        units = 1.0 if readings.dtype.kind == "f" else self.camera.depth_scale
        cells = geometry.block_cells[pixels]
        cells += (readings * np.float32(units / self._voxel_size)).astype(np.int64)
        return cells

    def _explain_empty(self, flat: npt.NDArray[Any]) -> None:
        """Raise when the frame holds no usable depth at all; valid depth that merely misses the
        box is no error (another camera may see it)."""
        camera = self.camera
        metres = flat.astype(np.float64) * (1.0 if flat.dtype.kind == "f" else camera.depth_scale)
        positive = metres[np.isfinite(metres) & (metres > 0)]
        if flat.dtype.kind == "f" and positive.size and np.median(positive) > _MILLIMETRE_HINT_M:
            raise ValueError(f"camera {camera.name!r}: float depth looks like millimetres (median "
                             f"{np.median(positive):.0f} m); pass the uint16 frame or divide by 1000")
        if not np.any((positive >= camera.min_depth) & (positive <= camera.max_depth)):
            raise ValueError(f"camera {camera.name!r}: no valid depth pixels (all zero/NaN or outside "
                             f"[{camera.min_depth}, {camera.max_depth}] m)")


def _per_camera(value: Any, names: list[str], single_ndim: int, what: str) -> list[Any]:
    """One entry per camera; a lone array is accepted for a single camera."""
    if value is None:
        return [None] * len(names)
    if isinstance(value, np.ndarray) and value.ndim == single_ndim:
        value = [value]
    if not isinstance(value, (Sequence, np.ndarray)) or len(value) != len(names):
        got = len(value) if isinstance(value, (Sequence, np.ndarray)) else type(value).__name__
        raise ValueError(f"expected {len(names)} {what} (one per camera: {', '.join(names)}), got {got}")
    return list(value)


def _first_per_cell(cells: IndexArray, index_bits: int, cell_count: int) -> IndexArray:
    """Positions of one entry per distinct cell id (ids below ``cell_count``), the lowest position
    of each, in cell order, so the choice is deterministic. Where the cells are few beside the
    entries (a noisy table top in view: 280,000 pixels, 600,000 cells), a table indexed by cell
    keeps each cell's lowest position (1 ms); else one sort of (cell, position) packed in an int64,
    in which only the first of each run of equal ids (image-row neighbours) takes part. Both give
    the same answer."""
    if cell_count <= _DENSE_CELLS_PER_ENTRY * cells.size:
        unset = np.iinfo(np.int32).max  # positions count pixels or points: far below 2**31
        lowest = np.full(cell_count, unset, dtype=np.int32)
        np.minimum.at(lowest, cells, np.arange(cells.size, dtype=np.int32))
        return lowest[lowest != unset].astype(np.int64)
    run_starts = np.empty(cells.size, dtype=bool)
    run_starts[:1] = True
    np.not_equal(cells[1:], cells[:-1], out=run_starts[1:])
    positions = np.flatnonzero(run_starts)
    keys = cells[positions] << index_bits
    keys |= positions
    keys.sort()
    distinct = keys >> index_bits
    first = np.empty(keys.size, dtype=bool)
    first[:1] = True
    np.not_equal(distinct[1:], distinct[:-1], out=first[1:])
    return keys[first] & ((1 << index_bits) - 1)


def _voxel_cells(points: Float32Array, low: Float32Array, counts: IndexArray, voxel: float) -> IndexArray:
    """Voxel id of each point ``(3, n)`` in the crop box (``counts`` voxels per axis)."""
    offsets = np.floor((points - low[:, None]) * np.float32(1.0 / voxel))
    np.maximum(offsets, 0, out=offsets)  # a point that rounding puts just below the box
    cells = offsets[2] * np.float64(counts[1])  # float64 holds the ids exactly
    cells += offsets[1]
    cells *= np.float64(counts[0])
    cells += offsets[0]
    return cells.astype(np.int64)


class CloudMaker:
    """A :class:`CloudPipeline` made callable: depth frames in, the policy's point cloud out.

    Build it once per pipeline (a fraction of a second and about 50 bytes per pixel: each
    camera's rays, crop interval and pixel blocks), then call it per frame. Deterministic: the
    same frames give the same cloud.
    """

    def __init__(self, pipeline: CloudPipeline) -> None:
        self.pipeline = pipeline
        self._views = tuple(_View(camera, pipeline.crop_low, pipeline.crop_high, pipeline.voxel_size)
                            for camera in pipeline.cameras)
        self._names = [camera.name for camera in pipeline.cameras]
        self._low = np.asarray(pipeline.crop_low, dtype=np.float32)
        self._index_bits = pipeline._index_bits()

    def __call__(self, depths: Frames, colours: Frames | None = None, poses: Poses | None = None) -> Float32Array:
        """The cloud: ``(num_points, 3)`` float32 in the base frame, or ``(num_points, 6)`` with
        colour in [0, 1].

        Args:
            depths: one (height, width) frame per camera (a lone array for one camera): an
                integer dtype (e.g. uint16 millimetres), scaled by ``depth_scale``, or float metres.
            colours: (height, width, 3) images, uint8 or float in [0, 1]; required exactly when
                the pipeline has ``colour=True``.
            poses: 4x4 camera-to-base transforms for this call only, overriding the extrinsics
                (a camera on a moving wrist); a ``None`` entry keeps the calibrated pose.

        Fewer than ``num_points`` points in the box are padded by cycling through them, as
        :func:`~mp1.runtime.pointcloud.farthest_point_sample` does.
        """
        num_points = self.pipeline.num_points
        selections = self._select(depths, poses)
        coarse = [self._coarse_cells(view, selection) for view, selection in zip(self._views, selections, strict=True)]
        points, sources = self._fused(selections, coarse)
        if points.shape[1] >= num_points:
            chosen = self._candidates(points)
        else:  # a small scene: fewer cells than points
            points, sources = self._fused(selections)
            if self.pipeline.version >= 2:
                chosen = self._small_scene_candidates(coarse, sources)
            else:
                chosen = self._candidates(points)
        rows = self._rows(points, sources, chosen, colours)
        if rows.shape[0] <= num_points:
            return farthest_point_sample(rows, num_points)
        height = min(_FPS_TREE_HEIGHT, int(np.log2(rows.shape[0])))
        chosen = fpsample.bucket_fps_kdline_sampling(rows[:, :3], num_points, h=height, start_idx=0)
        return rows[chosen.astype(np.int64)]

    def points(self, depths: Frames, colours: Frames | None = None, poses: Poses | None = None) -> Float32Array:
        """Every valid point inside the crop box, before any reduction: ``(n, 3 | 6)`` float32,
        cameras in pipeline order, pixels in row-major order (``crop(depth_to_points(...))``
        less the invalid pixels). Arguments as for calling the maker."""
        points, sources = self._fused(self._select(depths, poses))
        return self._rows(points, sources, np.arange(points.shape[1]), colours)

    def _select(self, depths: Frames, poses: Poses | None) -> list[_Selection]:
        """Per camera, :meth:`_View.select`: the in-crop pixels, their readings and geometry."""
        frames = _per_camera(depths, self._names, 2, "depth frames")
        pose_list = _per_camera(poses, self._names, 2, "poses")
        return [view.select(_checked_depth(view.camera, frame), pose)
                for view, frame, pose in zip(self._views, frames, pose_list, strict=True)]

    def _coarse_cells(self, view: _View, selection: _Selection) -> IndexArray:
        """Positions in one camera's selection of one pixel per (pixel block, depth bin) cell."""
        pixels, readings, geometry = selection
        if not pixels.size:
            return pixels
        return _first_per_cell(view.cells(pixels, readings, geometry), self._index_bits, geometry.cell_count)

    def _fused(
        self, selections: list[_Selection], keep: list[IndexArray] | None = None
    ) -> tuple[Float32Array, list[IndexArray]]:
        """In-crop points of all cameras, ``(3, n)``, and per camera the pixel of each; with
        ``keep``, only those positions of each camera's selection become points."""
        parts, sources = [], []
        for index, (view, (pixels, readings, geometry)) in enumerate(zip(self._views, selections, strict=True)):
            if keep is not None:
                pixels, readings = pixels[keep[index]], readings[keep[index]]
            points = np.take(geometry.rays, pixels, axis=1)
            points *= view.metres(readings)
            points += geometry.pos[:, None]
            parts.append(points)
            sources.append(pixels)
        points = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if points.shape[1] == 0:
            low, high = self.pipeline.crop_low, self.pipeline.crop_high
            raise ValueError(f"no valid point inside the crop box {list(low)} .. {list(high)} "
                             f"(check the extrinsics, the box and the depth units)")
        return points, sources

    def _small_scene_candidates(self, coarse: list[IndexArray], sources: list[IndexArray]) -> IndexArray:
        """Positions among all in-crop points: each coarse cell's pixel, which keeps every
        isolated part, plus a regular stride, which fills the surfaces; at most
        ``max_candidates`` in all."""
        sizes = [pixels.size for pixels in sources]
        count, budget = sum(sizes), self.pipeline.max_candidates
        if count <= budget:
            return np.arange(count)
        starts = np.cumsum([0, *sizes[:-1]])
        cells = np.concatenate([positions + start for positions, start in zip(coarse, starts, strict=True)])
        chosen = np.zeros(count, dtype=bool)
        chosen[:: -(-count // (budget - cells.size))] = True  # ceil: at most budget - cells.size
        chosen[cells] = True
        return np.flatnonzero(chosen)

    def _candidates(self, points: Float32Array) -> IndexArray:
        """Indices of the points farthest point sampling chooses from: one per voxel of a grid
        grown until at most ``max_candidates`` remain, unless that would leave fewer than
        ``num_points`` (then the last finer set)."""
        pipeline = self.pipeline
        chosen = np.arange(points.shape[1])
        voxel = pipeline.voxel_size
        while chosen.size > pipeline.max_candidates:
            # A surface holds about area / voxel^2 voxels: grow the edge by the root of the excess.
            voxel *= max(math.sqrt(chosen.size / pipeline.max_candidates), 1.05)
            counts = _voxel_counts(pipeline.crop_low, pipeline.crop_high, voxel)
            cells = _voxel_cells(points[:, chosen], self._low, counts, voxel)
            reduced = chosen[_first_per_cell(cells, self._index_bits, int(np.prod(counts)))]
            if reduced.size < pipeline.num_points:
                break
            chosen = reduced
        return chosen

    def _rows(
        self, points: Float32Array, sources: list[IndexArray], chosen: IndexArray, colours: Frames | None
    ) -> Float32Array:
        """The chosen points as contiguous ``(n, 3 | 6)`` rows, colour read from the images."""
        rows = np.ascontiguousarray(points[:, chosen].T)
        if not self.pipeline.colour:
            if colours is not None:
                raise ValueError("colours given, but the pipeline has colour=False")
            return rows
        if colours is None:
            raise ValueError("the pipeline has colour=True: pass one colour image per camera")
        images = _per_camera(colours, self._names, 3, "colour images")
        result = np.empty((chosen.size, 6), dtype=np.float32)
        result[:, :3] = rows
        ends = np.cumsum([pixels.size for pixels in sources])
        owner = np.searchsorted(ends, chosen, side="right")
        for index, (view, image, pixels) in enumerate(zip(self._views, images, sources, strict=True)):
            image = np.asarray(image)
            camera = view.camera
            if image.shape != (camera.height, camera.width, 3) or image.dtype.kind not in "uf":
                raise ValueError(f"camera {camera.name!r}: colour image must be {(camera.height, camera.width, 3)} "
                                 f"uint8 or float, got {image.shape} {image.dtype}")
            mine = owner == index
            values = image.reshape(-1, 3)[pixels[chosen[mine] - (ends[index] - pixels.size)]].astype(np.float32)
            result[mine, 3:] = values / 255.0 if image.dtype.kind == "u" else values
        return result


def _checked_depth(camera: Camera, frame: npt.ArrayLike) -> npt.NDArray[Any]:
    depth = np.asarray(frame)
    if depth.dtype.kind not in "uif":
        raise ValueError(f"camera {camera.name!r}: depth dtype {depth.dtype} not supported; pass an integer "
                         f"frame (scaled by depth_scale) or float metres")
    if depth.shape != (camera.height, camera.width):
        raise ValueError(f"camera {camera.name!r}: depth frame has shape {depth.shape}, the camera is "
                         f"{(camera.height, camera.width)} (height, width)")
    return depth


@functools.lru_cache(maxsize=4)
def _cached_maker(pipeline: CloudPipeline) -> CloudMaker:
    return CloudMaker(pipeline)


def make_cloud(
    pipeline: CloudPipeline, depths: Frames, colours: Frames | None = None, poses: Poses | None = None
) -> Float32Array:
    """``CloudMaker(pipeline)(depths, colours, poses)``, reusing the makers of the last few
    pipelines, so that a call site need not keep one."""
    return _cached_maker(pipeline)(depths, colours, poses)
