"""Point clouds from depth images: back-projection, workspace crop, farthest point sampling.

Everything here is simulator-independent numpy (part of `mp1.runtime`: a robot computer needs
no simulator), so the same pipeline turns a real RGB-D frame (intrinsics ``K`` plus extrinsics from a hand-eye
calibration) into the observation a policy was trained on.

Camera convention
-----------------
``cam_rot`` is the camera-to-world rotation (its columns are the camera axes in the world
frame) and ``cam_pos`` the optical centre in the world frame. Two axis conventions exist:

* ``"opengl"`` (MuJoCo, default): the camera looks along its **-z** axis, **+y** is up in the
  image, **+x** to the right. This is what ``data.cam_xmat`` holds.
* ``"opencv"`` (most real cameras / calibration tools): looks along **+z**, **+y** is down,
  **+x** right.

They differ by a rotation of pi about the camera x axis, ``R_gl = R_cv @ diag(1, -1, -1)``.

Depth is the planar **z-depth** along the optical axis (not the distance along the ray), in
metres, row 0 at the top of the image. ``mujoco.Renderer`` with
``enable_depth_rendering()`` returns exactly that in mujoco 3.x: it reads the (reversed-Z)
depth buffer, undoes the projection in float64 and flips the image upright (checked against
known geometry: the Meta-World table top, at z = 0, back-projects to |z| < 1 mm). Pixels that
hit nothing read as the far plane (``model.vis.map.zfar * model.stat.extent``). Only raw
buffers (``mujoco.mjr_readPixels``, mujoco-py, older datasets) need
:func:`depth_buffer_to_metric`.
"""

from __future__ import annotations

from typing import Literal

import fpsample
import numpy as np
import numpy.typing as npt

CameraConvention = Literal["opengl", "opencv"]

# Rotation taking OpenCV camera-frame vectors to OpenGL camera-frame vectors (and back).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])

# Height of fpsample's KD-tree; buckets of 2**h points. 5 is the library's advice for
# clouds of a few thousand to tens of thousands of points.
_FPS_TREE_HEIGHT = 5


def intrinsics_from_fovy(fovy_deg: float, height: int, width: int) -> npt.NDArray[np.float64]:
    """Pinhole matrix ``K`` (OpenCV pixel convention) of a camera with vertical field of view.

    MuJoCo's ``cam_fovy`` is vertical and pixels are square, so ``fx == fy``. Pixel centres sit
    at integer coordinates, hence the principal point at ``((W - 1) / 2, (H - 1) / 2)``.
    """
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array(
        [[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def depth_to_points(
    depth: npt.ArrayLike,
    cam_pos: npt.ArrayLike,
    cam_rot: npt.ArrayLike,
    *,
    fovy_deg: float | None = None,
    intrinsics: npt.ArrayLike | None = None,
    rgb: npt.ArrayLike | None = None,
    convention: CameraConvention = "opengl",
) -> npt.NDArray[np.float32]:
    """Back-project a metric z-depth image to world-frame points, one per pixel.

    Args:
        depth: (H, W) z-depth in metres, row 0 at the top of the image.
        cam_pos: (3,) optical centre in the world frame.
        cam_rot: (3, 3) camera-to-world rotation in the given ``convention``.
        fovy_deg: vertical field of view in degrees (MuJoCo cameras); exclusive with
            ``intrinsics``.
        intrinsics: (3, 3) pinhole matrix ``K`` in OpenCV pixel convention (real cameras).
        rgb: optional (H, W, 3) colour image, uint8 in [0, 255] or float in [0, 1].
        convention: axis convention of ``cam_rot``, see the module docstring.

    Returns:
        (H*W, 3) float32 points, or (H*W, 6) with colour in [0, 1] when ``rgb`` is given, in
        row-major pixel order. Invalid depth is not filtered here: NaN/inf stay non-finite
        (and :func:`crop` drops them), zero depth lands on the camera centre.
    """
    if (fovy_deg is None) == (intrinsics is None):
        raise ValueError("give exactly one of fovy_deg or intrinsics")
    if convention not in ("opengl", "opencv"):
        raise ValueError(f"convention must be 'opengl' or 'opencv', got {convention!r}")
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    height, width = depth.shape
    k = (
        intrinsics_from_fovy(fovy_deg, height, width)
        if fovy_deg is not None
        else np.asarray(intrinsics, dtype=np.float64)
    )
    rot = np.asarray(cam_rot, dtype=np.float64).reshape(3, 3)
    rot_cv = rot @ _CV_TO_GL if convention == "opengl" else rot

    # Points in the OpenCV camera frame: x right, y down, z forward.
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    x = (u[None, :] - k[0, 2]) / k[0, 0] * depth
    y = (v[:, None] - k[1, 2]) / k[1, 1] * depth
    cam_points = np.stack([x, y, depth], axis=-1).reshape(-1, 3)
    points = cam_points @ rot_cv.T + np.asarray(cam_pos, dtype=np.float64).reshape(1, 3)
    points = points.astype(np.float32)
    if rgb is None:
        return points

    image = np.asarray(rgb)
    if image.shape != (height, width, 3):
        raise ValueError(f"rgb must be {(height, width, 3)}, got {image.shape}")
    colours = image.reshape(-1, 3).astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        colours /= 255.0
    return np.concatenate([points, colours], axis=1)


def crop(
    points: npt.NDArray[np.floating], low: npt.ArrayLike, high: npt.ArrayLike
) -> npt.NDArray[np.floating]:
    """Keep the points whose xyz (first three columns) lie in the box ``[low, high]``.

    Extra columns (colour) travel along. Non-finite points are always dropped.
    """
    xyz = points[:, :3]
    low_arr = np.asarray(low, dtype=xyz.dtype).reshape(1, 3)
    high_arr = np.asarray(high, dtype=xyz.dtype).reshape(1, 3)
    mask = np.all((xyz >= low_arr) & (xyz <= high_arr), axis=1)
    return points[mask]


def farthest_point_sample(
    points: npt.NDArray[np.floating], n: int, start_index: int = 0
) -> npt.NDArray[np.floating]:
    """Down-sample to exactly ``n`` points by farthest point sampling on xyz.

    Uses fpsample's bucket/KD-line variant ("QuickFPS"), which is deterministic for a fixed
    ``start_index``, so the same cloud always yields the same subset in the same order. (In
    fpsample 1.0.2 the bucket variants read ``start_index`` in their internal KD-tree order:
    the sample does not begin with ``points[start_index]``. Coverage matches exact FPS.) When
    the cloud has ``n`` points or fewer, every point is kept (in input order) and the list is
    padded by cycling through it again, so the output shape is fixed and reproducible.

    Raises:
        ValueError: empty input, ``n < 1`` or ``start_index`` outside the cloud.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = points.shape[0]
    if count == 0:
        raise ValueError("cannot sample from an empty point cloud (was the crop box too tight?)")
    if not 0 <= start_index < count:
        raise ValueError(f"start_index {start_index} outside a cloud of {count} points")
    if count <= n:
        return points[np.resize(np.arange(count), n)]
    height = min(_FPS_TREE_HEIGHT, int(np.log2(count)))
    index = fpsample.bucket_fps_kdline_sampling(points[:, :3], n, h=height, start_idx=start_index)
    return points[index.astype(np.int64)]


def depth_buffer_to_metric(
    buffer: npt.ArrayLike, near: float, far: float, *, reversed_z: bool = False
) -> npt.NDArray[np.float32]:
    """Convert a normalised OpenGL depth buffer in [0, 1] to metric z-depth.

    Only needed for raw buffers; ``mujoco.Renderer`` already returns metric depth.
    The classic buffer (mujoco-py, ``mjr_readPixels`` before mujoco 3) is 0 at ``near`` and
    1 at ``far``; mujoco 3's own buffer is reversed (1 at ``near``, 0 at ``far``).
    For a MuJoCo model, ``near = model.vis.map.znear * model.stat.extent`` and likewise
    ``far``.
    """
    b = np.asarray(buffer, dtype=np.float64)
    if reversed_z:
        b = 1.0 - b
    return (near / (1.0 - b * (1.0 - near / far))).astype(np.float32)

