"""Back-projection, crop and farthest point sampling on synthetic data (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from mp1.runtime.pointcloud import (
    crop,
    depth_buffer_to_metric,
    depth_to_points,
    farthest_point_sample,
    intrinsics_from_fovy,
)

# A MuJoCo/OpenGL camera with the identity rotation looks straight down the world's -z axis,
# with image-up along world +y and image-right along world +x.
CAM_POS = np.array([0.2, -0.1, 1.5])
# The same camera in OpenCV axes (looks along +z_cam, y down): R_cv = R_gl @ diag(1, -1, -1).
CAM_ROT_CV = np.diag([1.0, -1.0, -1.0])


def test_plane_at_known_distance_fovy() -> None:
    """A 4x4 image of a floor 1.5 m below the camera lands on z = 0 at the pinhole positions."""
    depth = np.full((4, 4), 1.5)
    points = depth_to_points(depth, CAM_POS, np.eye(3), fovy_deg=90.0)
    assert points.shape == (16, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-6)
    # fovy 90 deg on 4 rows: f = 2 px, pixel centres at -1.5, -0.5, 0.5, 1.5 px from the axis.
    offsets = np.array([-1.5, -0.5, 0.5, 1.5]) / 2.0 * 1.5
    grid = points.reshape(4, 4, 3)
    np.testing.assert_allclose(grid[0, :, 0], CAM_POS[0] + offsets, atol=1e-6)  # left -> right
    np.testing.assert_allclose(grid[:, 0, 1], CAM_POS[1] - offsets, atol=1e-6)  # top row is +y


def test_tilted_camera_and_opencv_intrinsics_agree() -> None:
    """Any camera pose: points lie on the ray at the given z-depth; both conventions agree."""
    angle = np.deg2rad(30.0)
    tilt = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, size=(6, 8))
    gl = depth_to_points(depth, CAM_POS, tilt, fovy_deg=60.0)
    k = intrinsics_from_fovy(60.0, 6, 8)
    cv = depth_to_points(depth, CAM_POS, tilt @ CAM_ROT_CV, intrinsics=k, convention="opencv")
    np.testing.assert_allclose(gl, cv, atol=1e-6)
    # The z-depth is the distance along the optical axis (-z_cam in OpenGL axes).
    along_axis = (gl - CAM_POS) @ (-tilt[:, 2])
    np.testing.assert_allclose(along_axis, depth.reshape(-1), atol=1e-5)


def test_rgb_channels_in_unit_range() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (255, 0, 51)
    points = depth_to_points(np.ones((2, 3)), CAM_POS, np.eye(3), fovy_deg=45.0, rgb=rgb)
    assert points.shape == (6, 6)
    np.testing.assert_allclose(points[1, 3:], [1.0, 0.0, 0.2], atol=1e-6)


def test_exactly_one_camera_model_required() -> None:
    with pytest.raises(ValueError):
        depth_to_points(np.ones((2, 2)), CAM_POS, np.eye(3))
    with pytest.raises(ValueError):
        depth_to_points(
            np.ones((2, 2)), CAM_POS, np.eye(3), fovy_deg=45.0, intrinsics=np.eye(3)
        )


def test_depth_buffer_to_metric_endpoints() -> None:
    near, far = 0.05, 10.0
    np.testing.assert_allclose(
        depth_buffer_to_metric([0.0, 1.0], near, far), [near, far], rtol=1e-6
    )
    np.testing.assert_allclose(
        depth_buffer_to_metric([1.0, 0.0], near, far, reversed_z=True), [near, far], rtol=1e-6
    )


def test_crop_keeps_box_and_extra_columns_drops_nan() -> None:
    points = np.array(
        [[0.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 2.0], [np.nan, 0.0, 0.0, 3.0], [1.0, 1.0, 1.0, 4.0]]
    )
    kept = crop(points, (-1, -1, -1), (1, 1, 1))
    np.testing.assert_array_equal(kept[:, 3], [1.0, 4.0])


def test_fps_deterministic_and_spread() -> None:
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(5000, 3)).astype(np.float32)
    first = farthest_point_sample(cloud, 256, start_index=7)
    second = farthest_point_sample(cloud.copy(), 256, start_index=7)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (256, 3)
    assert len(np.unique(first, axis=0)) == 256  # a subset of distinct input points
    # Two far-apart clusters: two samples take one point from each.
    clusters = np.concatenate([rng.normal(size=(100, 3)), rng.normal(size=(100, 3)) + 50.0])
    pair = farthest_point_sample(clusters, 2)
    assert abs(pair[0, 0] - pair[1, 0]) > 30.0


def test_fps_pads_small_clouds_by_cycling() -> None:
    cloud = np.arange(18, dtype=np.float32).reshape(3, 6)  # xyz + colour columns travel along
    padded = farthest_point_sample(cloud, 7)
    np.testing.assert_array_equal(padded, cloud[[0, 1, 2, 0, 1, 2, 0]])
    np.testing.assert_array_equal(farthest_point_sample(cloud, 3), cloud)


def test_fps_rejects_empty_and_bad_start() -> None:
    with pytest.raises(ValueError, match="empty"):
        farthest_point_sample(np.zeros((0, 3), np.float32), 4)
    with pytest.raises(ValueError):
        farthest_point_sample(np.zeros((10, 3), np.float32), 4, start_index=10)
