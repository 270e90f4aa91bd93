"""Fast depth-to-cloud (mp1.runtime.perception) on small synthetic frames of known geometry."""

from __future__ import annotations

import json

import fpsample
import numpy as np
import pytest

from mp1.runtime.perception import Camera, CloudMaker, CloudPipeline, _first_per_cell, make_cloud
from mp1.runtime.pointcloud import crop, depth_to_points, farthest_point_sample

WIDTH, HEIGHT, FOCAL = 40, 30, 40.0
K = np.array([[FOCAL, 0.0, (WIDTH - 1) / 2], [0.0, FOCAL, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
# A camera 1.5 m above the floor (z = 0) looking straight down, image-right along +x and image-up
# along +y: in OpenCV axes (y down, looks along +z) its rotation is diag(1, -1, -1); in OpenGL
# axes it is the identity (R_gl = R_cv @ diag(1, -1, -1)).
DOWN_CV = np.diag([1.0, -1.0, -1.0])
CAM_POS = np.array([0.1, -0.2, 1.5])
LOW, HIGH = (-2.0, -2.0, -0.01), (2.0, 2.0, 1.0)


def pose(rot: np.ndarray, pos: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rot, pos
    return matrix


def rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def camera(name: str = "top", rot: np.ndarray = DOWN_CV, pos: np.ndarray = CAM_POS, **settings) -> Camera:
    return Camera(name, WIDTH, HEIGHT, K, pose(rot, pos), **settings)


def pipeline(*cameras: Camera, **settings) -> CloudPipeline:
    settings = {"crop_low": LOW, "crop_high": HIGH, "num_points": 64, "voxel_size": 0.05, "max_candidates": 200,
                **settings}
    return CloudPipeline(cameras or (camera(),), **settings)


def floor_grid(depth: float = 1.5) -> np.ndarray:
    """Where each pixel of the downward camera hits the floor, row-major (H*W, 3)."""
    u, v = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    x = CAM_POS[0] + (u - K[0, 2]) / FOCAL * depth
    y = CAM_POS[1] - (v - K[1, 2]) / FOCAL * depth
    return np.stack([x, y, np.zeros_like(x)], axis=-1).reshape(-1, 3)


def test_floor_lands_on_known_coordinates_in_both_conventions_and_units() -> None:
    expected = floor_grid()
    metres = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    millimetres = np.full((HEIGHT, WIDTH), 1500, np.uint16)
    opencv = CloudMaker(pipeline(camera()))
    opengl = CloudMaker(pipeline(camera(rot=np.eye(3), convention="opengl")))
    for maker in (opencv, opengl):
        for frame in (metres, millimetres, metres.astype(np.float64)):
            np.testing.assert_allclose(maker.points(frame), expected, atol=1e-5)


def test_from_mujoco_matches_depth_to_points_with_fovy() -> None:
    rot = rotation_x(25.0)  # OpenGL axes, tilted
    depth = np.random.default_rng(0).uniform(1.0, 2.0, (HEIGHT, WIDTH)).astype(np.float32)
    sim = Camera.from_mujoco("sim", WIDTH, HEIGHT, 50.0, CAM_POS, rot.reshape(-1))
    maker = CloudMaker(CloudPipeline((sim,), (-5, -5, -5), (5, 5, 5)))
    np.testing.assert_allclose(maker.points(depth), depth_to_points(depth, CAM_POS, rot, fovy_deg=50.0), atol=1e-5)


def test_back_projection_and_crop_agree_with_todays_pipeline() -> None:
    """Same point set, same order, as crop(depth_to_points(...)) for a tilted OpenCV camera,
    with a box that cuts through the cloud."""
    rot = DOWN_CV @ rotation_x(20.0)
    depth = np.random.default_rng(1).uniform(1.0, 2.5, (HEIGHT, WIDTH))
    low, high = (-0.5, -1.0, -0.6), (0.6, 0.4, 0.3)
    maker = CloudMaker(CloudPipeline((camera(rot=rot),), low, high))
    today = crop(depth_to_points(depth, CAM_POS, rot, intrinsics=K, convention="opencv"), low, high)
    fast = maker.points(depth)
    assert 100 < len(today) < HEIGHT * WIDTH
    np.testing.assert_allclose(fast, today, atol=1e-5)


def test_invalid_pixels_are_dropped_never_placed_at_the_camera() -> None:
    metres = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    metres[0, :5] = 0.0
    metres[1, :5] = np.nan
    metres[2, :5] = np.inf
    metres[3, :5] = 50.0  # beyond max_depth (10 m)
    millimetres = np.full((HEIGHT, WIDTH), 1500, np.uint16)
    millimetres[:4, :5] = 0
    box_with_camera = pipeline(camera(), crop_low=(-5, -5, -5), crop_high=(5, 5, 5))
    for frame in (metres, millimetres):
        points = CloudMaker(box_with_camera).points(frame)
        assert len(points) == HEIGHT * WIDTH - 20
        assert np.all(np.isfinite(points))
        np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-5)  # all on the floor, none at z = 1.5


def test_min_and_max_depth_bound_valid_pixels() -> None:
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    depth[:10] = 0.9
    depth[10:20] = 1.2
    near = camera(min_depth=1.0, max_depth=1.4)
    box = pipeline(near, crop_low=(-5, -5, -5), crop_high=(5, 5, 5))
    points = CloudMaker(box).points(depth)
    assert len(points) == 10 * WIDTH
    np.testing.assert_allclose(points[:, 2], 1.5 - 1.2, atol=1e-5)


def test_two_cameras_fuse_in_the_base_frame_with_their_colours() -> None:
    """Left and right cameras over one floor: the cloud spans both halves, each point coloured
    by the camera that saw it."""
    left = camera("left", pos=np.array([-1.0, 0.0, 1.5]))
    right = camera("right", pos=np.array([1.0, 0.0, 1.5]))
    fused = pipeline(left, right, colour=True)
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    red = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    blue[..., 2] = 1.0
    maker = CloudMaker(fused)
    points = maker.points([depth, depth], colours=[red, blue])
    assert points.shape == (2 * HEIGHT * WIDTH, 6)
    cloud = maker([depth, depth], colours=[red, blue])
    assert cloud.shape == (64, 6) and cloud.dtype == np.float32
    np.testing.assert_allclose(cloud[:, 2], 0.0, atol=1e-5)
    half_width = 1.5 * (WIDTH - 1) / 2 / FOCAL
    assert cloud[:, 0].min() < -1.0 - 0.8 * half_width and cloud[:, 0].max() > 1.0 + 0.8 * half_width
    seen_left = cloud[:, 0] < -1.0 + half_width + 1e-4
    seen_right = cloud[:, 0] > 1.0 - half_width - 1e-4
    only_left, only_right = seen_left & ~seen_right, seen_right & ~seen_left
    assert only_left.any() and only_right.any()
    np.testing.assert_allclose(cloud[only_left, 3:], np.tile([1.0, 0.0, 0.0], (only_left.sum(), 1)))
    np.testing.assert_allclose(cloud[only_right, 3:], np.tile([0.0, 0.0, 1.0], (only_right.sum(), 1)))


def test_per_call_pose_overrides_the_extrinsics() -> None:
    moved = pose(DOWN_CV @ rotation_x(10.0), np.array([0.3, 0.1, 1.2]))
    depth = np.random.default_rng(2).uniform(0.8, 1.2, (HEIGHT, WIDTH)).astype(np.float32)
    calibrated = CloudMaker(pipeline(camera()))
    at_moved = CloudMaker(pipeline(Camera("top", WIDTH, HEIGHT, K, moved)))
    np.testing.assert_allclose(calibrated.points(depth, poses=moved), at_moved.points(depth), atol=1e-5)
    np.testing.assert_allclose(calibrated(depth, poses=[moved]), at_moved(depth), atol=1e-5)
    np.testing.assert_array_equal(calibrated(depth, poses=[None]), calibrated(depth))


def test_cloud_keeps_an_isolated_object_and_covers_like_todays() -> None:
    """A few pixels of a small object above the floor survive the reduction (farthest point
    sampling seeks them), and the in-crop points lie about as close to the cloud as to today's
    farthest point sample of all of them."""
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    depth[14:16, 20:22] = 1.0  # a 2x2-pixel object 0.5 m above the floor
    maker = CloudMaker(pipeline())
    cloud = maker(depth)
    assert np.any(np.isclose(cloud[:, 2], 0.5, atol=1e-4))
    points = maker.points(depth)

    def mean_distance(sample: np.ndarray) -> float:
        return float(np.linalg.norm(points[:, None] - sample[None], axis=-1).min(axis=1).mean())

    assert mean_distance(cloud) < 1.1 * mean_distance(farthest_point_sample(points, 64))


def test_small_scene_caps_the_candidates_and_covers_like_sampling_every_point(monkeypatch) -> None:
    """Three small boxes, the floor cropped out: fewer coarse cells than points. Version 2 gives
    farthest point sampling at most ``max_candidates`` of the 192 in-box points, version 1 all of
    them; both clouds hold every box, and version 2's covers the points about as well."""
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    tops = (1.0, 1.2, 1.1)
    for (row, column), top in zip(((2, 3), (12, 20), (20, 30)), tops, strict=True):
        depth[row : row + 8, column : column + 8] = top
    settings = {"crop_low": (-2.0, -2.0, 0.05), "voxel_size": 0.2, "max_candidates": 100}
    sampled_from, sample = [], fpsample.bucket_fps_kdline_sampling

    def counting_sample(points: np.ndarray, *args, **kwargs) -> np.ndarray:
        sampled_from.append(len(points))
        return sample(points, *args, **kwargs)

    monkeypatch.setattr(fpsample, "bucket_fps_kdline_sampling", counting_sample)
    current, first = CloudMaker(pipeline(**settings)), CloudMaker(pipeline(**settings, version=1))
    points = current.points(depth)
    clouds = {version: maker(depth) for version, maker in ((2, current), (1, first))}
    assert points.shape == (192, 3) and 64 < sampled_from[0] <= 100 and sampled_from[1] == 192

    def mean_distance(sample: np.ndarray) -> float:
        return float(np.linalg.norm(points[:, None] - sample[None], axis=-1).min(axis=1).mean())

    for cloud in clouds.values():
        assert cloud.shape == (64, 3)
        assert all(np.any(np.isclose(cloud[:, 2], 1.5 - top, atol=1e-4)) for top in tops)
    assert mean_distance(clouds[2]) < 1.1 * mean_distance(clouds[1])


def test_versions_agree_where_the_scene_spans_enough_cells() -> None:
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    depth[14:16, 20:22] = 1.0
    np.testing.assert_array_equal(CloudMaker(pipeline())(depth), CloudMaker(pipeline(version=1))(depth))


def test_same_frames_same_cloud() -> None:
    depth = (np.random.default_rng(3).uniform(1.2, 1.6, (HEIGHT, WIDTH)) * 1000).astype(np.uint16)
    first = CloudMaker(pipeline())(depth)
    assert first.shape == (64, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, CloudMaker(pipeline())(depth.copy()))
    np.testing.assert_array_equal(first, make_cloud(pipeline(), depth))


def test_first_per_cell_by_table_and_by_sort_agree_with_unique() -> None:
    """The reduction's two ways (a table indexed by cell, a sort) pick the same pixels: per
    distinct cell in cell order, its first position, as ``np.unique`` finds it."""
    rng = np.random.default_rng(5)
    runs = rng.integers(0, 300, 2000)  # runs of equal ids, as image rows give them
    cells = np.repeat(runs, rng.integers(1, 6, runs.size)).astype(np.int64)
    expected = np.unique(cells, return_index=True)[1]
    by_table = _first_per_cell(cells, index_bits=int(cells.size).bit_length(), cell_count=300)
    by_sort = _first_per_cell(cells, index_bits=int(cells.size).bit_length(), cell_count=10**9)
    np.testing.assert_array_equal(by_table, expected)
    np.testing.assert_array_equal(by_sort, expected)


def test_too_few_points_are_padded_like_farthest_point_sample() -> None:
    depth = np.zeros((HEIGHT, WIDTH), np.float32)
    depth[10, 10:15] = 1.5
    maker = CloudMaker(pipeline())
    np.testing.assert_array_equal(maker(depth), farthest_point_sample(maker.points(depth), 64))


def test_pipeline_round_trips_through_json() -> None:
    original = pipeline(camera(), camera("side", rot=np.eye(3), convention="opengl", depth_scale=0.0001), colour=True)
    restored = CloudPipeline.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored == original and hash(restored) == hash(original)
    assert original.version == 2
    written_by_version_1 = {key: value for key, value in original.to_dict().items() if key != "version"}
    assert CloudPipeline.from_dict(written_by_version_1).version == 1
    assert Camera.from_dict(original.cameras[1].to_dict()) == original.cameras[1]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.ones((HEIGHT, WIDTH + 1), np.float32), r"camera 'top'.*\(30, 41\).*\(30, 40\)"),
        (np.ones((HEIGHT, WIDTH), bool), "dtype bool"),
        (np.zeros((HEIGHT, WIDTH), np.uint16), "camera 'top': no valid depth pixels"),
        (np.full((HEIGHT, WIDTH), np.nan, np.float32), "camera 'top': no valid depth pixels"),
        (np.full((HEIGHT, WIDTH), 1500.0, np.float32), "looks like millimetres"),
        (np.full((HEIGHT, WIDTH), 3.0, np.float32), "no valid point inside the crop box"),  # below the floor
    ],
)
def test_bad_frames_are_named(frame: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CloudMaker(pipeline())(frame)


def test_bad_call_arguments_are_named() -> None:
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    two = CloudMaker(pipeline(camera("a"), camera("b")))
    with pytest.raises(ValueError, match=r"expected 2 depth frames .*a, b.*got 1"):
        two([depth])
    with pytest.raises(ValueError, match="colour=True"):
        CloudMaker(pipeline(colour=True))(depth)
    with pytest.raises(ValueError, match="colour=False"):
        CloudMaker(pipeline())(depth, colours=np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    with pytest.raises(ValueError, match=r"pose.*not a rotation"):
        CloudMaker(pipeline())(depth, poses=pose(2 * np.eye(3), CAM_POS))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"intrinsics": np.diag([-1.0, 1.0, 1.0])}, "focal lengths must be positive"),
        ({"intrinsics": np.eye(2)}, "intrinsics must be a finite 3x3"),
        ({"extrinsics": pose(np.diag([1.0, 1.0, -1.0]), CAM_POS)}, "not a rotation"),
        ({"extrinsics": pose(1.1 * np.eye(3), CAM_POS)}, "not a rotation"),
        ({"extrinsics": np.eye(4)[:3]}, "extrinsics must be a finite 4x4"),
        ({"convention": "ros"}, "convention must be"),
        ({"width": 0}, "width must be a positive integer"),
        ({"depth_scale": 0.0}, "depth_scale must be positive"),
        ({"min_depth": 2.0, "max_depth": 1.0}, "min_depth < max_depth"),
        ({"max_depth": float("inf")}, "max_depth must be a finite number"),
    ],
)
def test_camera_validation(change: dict, message: str) -> None:
    fields = {"name": "top", "width": WIDTH, "height": HEIGHT, "intrinsics": K, "extrinsics": pose(DOWN_CV, CAM_POS)}
    with pytest.raises(ValueError, match=message):
        Camera(**{**fields, **change})


def test_pipeline_and_dict_validation() -> None:
    with pytest.raises(ValueError, match="crop_low must be below crop_high"):
        CloudPipeline((camera(),), (0, 0, 0), (1, 1, 0))
    with pytest.raises(ValueError, match="max_candidates must be an integer >= num_points"):
        pipeline(num_points=512, max_candidates=100)
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        pipeline(version=3)
    with pytest.raises(ValueError, match="camera names must be unique"):
        pipeline(camera(), camera())
    data = pipeline().to_dict()
    with pytest.raises(ValueError, match="unknown stride"):
        CloudPipeline.from_dict({**data, "stride": 2})
    with pytest.raises(ValueError, match="missing crop_high"):
        CloudPipeline.from_dict({k: v for k, v in data.items() if k != "crop_high"})
    with pytest.raises(ValueError, match="camera 'top': missing intrinsics"):
        Camera.from_dict({k: v for k, v in data["cameras"][0].items() if k != "intrinsics"})
