"""Importers of robot recordings (ROS 1/2 bags, robomimic HDF5): tiny recordings of a known scene
(a floor at z = 0 seen from above), imported, checked step by step, and every fault refused with
one line that names it."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
h5py = pytest.importorskip("h5py")

from rosbags.rosbag1 import Writer as Ros1Writer  # noqa: E402
from rosbags.rosbag2 import StoragePlugin  # noqa: E402
from rosbags.rosbag2 import Writer as Ros2Writer  # noqa: E402
from rosbags.typesys import Stores, get_types_from_msg, get_typestore  # noqa: E402

from mp1.cli import main  # noqa: E402
from mp1.data import load_store  # noqa: E402
from mp1.data.importers import CloudSettings, RecordingError  # noqa: E402
from mp1.data.importers.bag import BagSettings, import_bags  # noqa: E402

WIDTH, HEIGHT, FOCAL = 32, 24, 30.0
K = [[FOCAL, 0.0, (WIDTH - 1) / 2], [0.0, FOCAL, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]]
PERIOD_NS = 33_333_333  # every stream at 30 Hz
START_NS = 1_700_000_000 * 10**9
DEPTH, STATE, ACTION = "/camera/depth/image_rect_raw", "/joint_states", "/arm/command"
SECOND_DEPTH = "/camera2/depth/image_rect_raw"
DOWN = (1.0, 0.0, 0.0, 0.0)  # quaternion (x, y, z, w): an optical frame looking along the base's -z
CLOUD = CloudSettings((-1.0, -1.0, -0.1), (3.0, 1.0, 1.5), 64)  # holds the camera too: no point may sit there
CROP = ["--crop-low", "-1", "-1", "-0.1", "--crop-high", "3", "1", "1.5", "--num-points", "64"]
BAG_FLAGS = ["--depth-topic", DEPTH, "--state-topic", STATE, "--action-topic", ACTION, "--rate", "10", *CROP]


def floor(frame: int, height: float, encoding: str) -> np.ndarray:
    """The floor seen from ``height`` metres, 1 mm further at each frame; the top rows hold no
    depth (0 or NaN), which must be dropped, not put at the camera."""
    metres = np.full((HEIGHT, WIDTH), height + 0.001 * frame)
    if encoding == "32FC1":
        metres[:3] = np.nan
        return metres.astype(np.float32)
    millimetres = np.round(metres * 1000).astype(np.uint16)
    millimetres[:3] = 0
    return millimetres


@dataclasses.dataclass
class Scene:
    """What a test bag records, with knobs for each fault."""

    frames: int = 16
    encoding: str = "16UC1"
    depth: Callable[[int, float, str], np.ndarray] = floor
    second_camera: bool = False  # at x = 2, 0.8 m above the floor
    moving: bool = False  # the camera's link moves 1 cm along x per frame, on /tf
    action_type: str = "std_msgs/msg/Float64MultiArray"
    drop_states: tuple[int, ...] = ()
    image_clock_s: float = 0.0  # added to the images' header stamps only
    action_delay_s: float = 0.0  # the action stream starts this much later


def write_bag(path: Path, kind: str = "sqlite3", scene: Scene | None = None) -> Path:
    """A ROS 2 (sqlite3 or mcap) or ROS 1 bag of ``scene``. At message k, state: joints j1, j2, j3
    at k, 10 + k, 20 + k; action: 100 + k, 200 + k (joints j1, j3 as a JointState)."""
    scene = scene or Scene()
    ros1 = kind == "ros1"
    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    if ros1:  # noetic's store lacks tf2_msgs
        store.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    types = store.types
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr

    def header(ns: int, frame: str = "") -> object:
        stamp = types["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9)
        return types["std_msgs/msg/Header"](*((0,) if ros1 else ()), stamp, frame)

    def transform(ns: int, parent: str, child: str, xyz: tuple, rotation: tuple = (0.0, 0.0, 0.0, 1.0)) -> object:
        geometry = types["geometry_msgs/msg/Transform"](types["geometry_msgs/msg/Vector3"](*xyz),
                                                         types["geometry_msgs/msg/Quaternion"](*rotation))
        return types["geometry_msgs/msg/TransformStamped"](header(ns, parent), child, geometry)

    def vector(ns: int, values: list[float]) -> object:
        if scene.action_type == "sensor_msgs/msg/JointState":
            return types["sensor_msgs/msg/JointState"](header(ns), ["j1", "j3"], np.array(values), np.zeros(0), np.zeros(0))
        return types["std_msgs/msg/Float64MultiArray"](types["std_msgs/msg/MultiArrayLayout"]([], 0), np.array(values))

    cameras = [(DEPTH, "camera_depth_optical_frame", 1.0)] + ([(SECOND_DEPTH, "camera2_optical", 0.8)] if scene.second_camera else [])
    messages: list[tuple[int, str, str, object]] = []  # (receive time, topic, type, message)
    static = [transform(START_NS, "camera_link", "camera_depth_optical_frame", (0.0, 0.0, 0.0), DOWN),
              transform(START_NS, "base_link", "camera2_optical", (2.0, 0.0, 0.8), DOWN)]
    if not scene.moving:
        static.append(transform(START_NS, "base_link", "camera_link", (0.0, 0.0, 1.0)))
    messages.append((START_NS, "/tf_static", "tf2_msgs/msg/TFMessage", types["tf2_msgs/msg/TFMessage"](static)))
    for k in range(scene.frames):
        ns = START_NS + k * PERIOD_NS
        for topic, frame, height in cameras:
            info_header, image_header = header(ns, frame), header(ns + int(scene.image_clock_s * 1e9), frame)
            depth = scene.depth(k, height, scene.encoding)
            image = types["sensor_msgs/msg/Image"](image_header, HEIGHT, WIDTH, scene.encoding, 0,
                                                   WIDTH * depth.itemsize, depth.view(np.uint8).reshape(-1))
            roi = types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False)
            info = types["sensor_msgs/msg/CameraInfo"](info_header, HEIGHT, WIDTH, "plumb_bob", np.zeros(5),
                                                       np.ravel(K), np.eye(3).ravel(), np.hstack([K, np.zeros((3, 1))]).ravel(),
                                                       0, 0, roi)
            messages += [(ns + 2_000_000, topic, "sensor_msgs/msg/Image", image),
                         (ns, topic.rsplit("/", 1)[0] + "/camera_info", "sensor_msgs/msg/CameraInfo", info)]
        if k not in scene.drop_states:
            joints = types["sensor_msgs/msg/JointState"](header(ns), ["j1", "j2", "j3"], np.array([k, 10.0 + k, 20.0 + k]),
                                                         np.zeros(0), np.zeros(0))
            messages.append((ns + 1_000_000, STATE, "sensor_msgs/msg/JointState", joints))
        action_ns = ns + int(scene.action_delay_s * 1e9)
        messages.append((action_ns, ACTION, scene.action_type, vector(action_ns, [100.0 + k, 200.0 + k])))
        if scene.moving:
            moving = transform(ns, "base_link", "camera_link", (0.01 * k, 0.0, 1.0))
            messages.append((ns, "/tf", "tf2_msgs/msg/TFMessage", types["tf2_msgs/msg/TFMessage"]([moving])))

    if ros1:
        writer = Ros1Writer(path)
    else:
        plugin = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
        writer = Ros2Writer(path, version=9, storage_plugin=plugin)
    with writer:
        connections = {}
        for time, topic, msgtype, message in sorted(messages, key=lambda m: m[0]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], time, serialize(message, msgtype))
    return path


@pytest.fixture
def cli(capsys):
    """`mp1 ARGV...`, returning what it printed."""

    def call(*argv: object) -> str:
        main([str(arg) for arg in argv])
        return capsys.readouterr().out

    return call


def cli_error(*argv: object) -> str:
    """The one line `mp1 ARGV...` exits with."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    message = str(exit_info.value.code)
    assert message.startswith("mp1: error: ") and "\n" not in message, message
    return message


def check_floor(cloud: np.ndarray, frame: int, x_shift: float = 0.0) -> None:
    """A 64-point cloud of the floor seen in ``frame`` (1 mm further per frame) from above x_shift."""
    assert cloud.shape == (64, 3)
    np.testing.assert_allclose(cloud[:, 2], -0.001 * frame, atol=2e-4)  # nothing at the camera (z = 1)
    half_width = (WIDTH / 2) / FOCAL * 1.05
    assert np.all(np.abs(cloud[:, 0] - x_shift) <= half_width)


@pytest.mark.parametrize("kind", ["sqlite3", "mcap", "ros1"])
def test_a_bag_becomes_an_episode_resampled_to_the_control_rate(tmp_path, cli, kind):
    bag = write_bag(tmp_path / ("demo.bag" if kind == "ros1" else "demo"), kind)
    out = cli("import", "bag", bag, "--out", tmp_path / "store.zarr", "--base-frame", "base_link", *BAG_FLAGS)
    assert "demo" in out and "5 steps" in out and "frames/s" in out, out

    store = load_store(tmp_path / "store.zarr")
    assert store.episode_ends.tolist() == [5]  # 16 frames at 30 Hz span 0.5 s: ticks at 0, 0.1, ..., 0.4 s
    held = np.arange(5) * 3  # the message at or before each 10 Hz tick
    np.testing.assert_array_equal(store.arrays["state"], np.stack([held, 10 + held, 20 + held], axis=1))
    np.testing.assert_array_equal(store.arrays["action"], np.stack([100 + held, 200 + held], axis=1))
    for step, frame in enumerate(held):
        check_floor(store.arrays["point_cloud"][step], frame)
    assert store.attrs["import_settings"]["rate"] == 10


def test_a_camera_on_a_moving_link_is_placed_at_each_tick(tmp_path):
    bag = write_bag(tmp_path / "moving", "mcap", Scene(moving=True))
    settings = BagSettings((DEPTH,), STATE, ACTION, rate=10, base_frame="base_link")
    list(import_bags([bag], tmp_path / "store.zarr", settings, CLOUD))
    clouds = load_store(tmp_path / "store.zarr").arrays["point_cloud"]
    for step, cloud in enumerate(clouds):
        check_floor(cloud, 3 * step, x_shift=0.03 * step)
        assert abs(cloud[:, 0].mean() - 0.03 * step) < 0.1


def test_float_depth_with_nan_pixels_a_pose_file_and_selected_joints(tmp_path, cli):
    bag = write_bag(tmp_path / "float.bag", "ros1", Scene(encoding="32FC1", action_type="sensor_msgs/msg/JointState"))
    poses = tmp_path / "poses.yaml"
    poses.write_text(f"xyz: [0, 0, 1]\nquaternion: {list(DOWN)}\n")
    cli("import", "bag", bag, "--out", tmp_path / "store.zarr", "--camera-pose", poses, "--joint-names", "j3,j1", *BAG_FLAGS)
    store = load_store(tmp_path / "store.zarr")
    held = np.arange(5) * 3
    np.testing.assert_array_equal(store.arrays["state"], np.stack([20 + held, held], axis=1))
    np.testing.assert_array_equal(store.arrays["action"], np.stack([200 + held, 100 + held], axis=1))
    for step, frame in enumerate(held):
        check_floor(store.arrays["point_cloud"][step], frame)


def test_two_cameras_fuse_into_one_cloud_in_the_base_frame(tmp_path):
    bag = write_bag(tmp_path / "two", "sqlite3", Scene(second_camera=True))
    settings = BagSettings((DEPTH, SECOND_DEPTH), STATE, ACTION, rate=10, base_frame="base_link")
    list(import_bags([bag], tmp_path / "store.zarr", settings, CLOUD))
    store = load_store(tmp_path / "store.zarr")
    assert [c["name"] for c in store.attrs["observation"]["pipeline"]["cameras"]] == [DEPTH, SECOND_DEPTH]
    for step, cloud in enumerate(store.arrays["point_cloud"]):
        np.testing.assert_allclose(cloud[:, 2], -0.003 * step, atol=2e-4)
        near_first, near_second = np.abs(cloud[:, 0]) < 0.6, np.abs(cloud[:, 0] - 2) < 0.6
        assert near_first.sum() > 10 and near_second.sum() > 10 and np.all(near_first | near_second)


def zeros(frame: int, height: float, encoding: str) -> np.ndarray:
    return np.zeros((HEIGHT, WIDTH), np.float32 if encoding == "32FC1" else np.uint16)


def nans(frame: int, height: float, encoding: str) -> np.ndarray:
    return np.full((HEIGHT, WIDTH), np.nan, np.float32)


def millimetres_as_float(frame: int, height: float, encoding: str) -> np.ndarray:
    return floor(frame, height, "16UC1").astype(np.float32)


def truncate(bag: Path) -> Path:
    database = next(bag.glob("*.db3"))
    database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    return bag


FAULTS = {  # name: (scene, extra flags, what the one line must say)
    "missing topic": (Scene(), ["--state-topic", "/robot/joints"], r"demo: no topic /robot/joints in the bag \(it has .*/joint_states"),
    "timestamp gap": (Scene(drop_states=tuple(range(3, 15))), [],
                      r"demo: timestamp gap: /joint_states has no message for 0\.43 s at t=0\.07 s \(max_gap 0\.2 s\)"),
    "camera clock": (Scene(image_clock_s=5.0), [],
                     r"demo: unsynchronised streams: /camera/depth/image_rect_raw is stamped \+5\.00 s from when it was received"),
    "barely overlapping": (Scene(action_delay_s=0.4), [],
                           r"demo: unsynchronised streams: /arm/command spans 0\.4-0\.9 s and .* 0\.0-0\.5 s; they overlap for 0\.10 s only"),
    "all-zero depth": (Scene(depth=zeros), [], r"demo: step 0 \(t=0\.00 s\): camera '/camera/depth/image_rect_raw': no valid depth pixels"),
    "all-NaN depth": (Scene(encoding="32FC1", depth=nans), [], r"demo: step 0 \(t=0\.00 s\): .*no valid depth pixels \(all zero/NaN"),
    "millimetres as 32FC1": (Scene(encoding="32FC1", depth=millimetres_as_float), [], r"float depth looks like millimetres"),
    "depth scale out of range": (Scene(), ["--depth-scale", "1"], r"no valid depth pixels \(all zero/NaN or outside \[0\.0, 10\.0\] m\)"),
    "depth scale on 32FC1": (Scene(encoding="32FC1"), ["--depth-scale", "0.001"], r"is 32FC1 \(metres\): a depth scale applies to 16UC1"),
    "truncated bag": (Scene(), [], r"demo: cannot read the bag, truncated or damaged\? \(.*malformed"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_one_line_that_names_it(tmp_path, fault):
    scene, flags, expected = FAULTS[fault]
    bag = write_bag(tmp_path / "demo", "sqlite3", scene)
    if fault == "truncated bag":
        truncate(bag)
    message = cli_error("import", "bag", bag, "--out", tmp_path / "store.zarr", "--base-frame", "base_link", *BAG_FLAGS, *flags)
    assert re.search(expected, message), message
    assert not (tmp_path / "store.zarr" / "data").exists()  # nothing committed


def test_an_interrupted_import_keeps_its_episodes_and_resumes_without_duplicates(tmp_path):
    first = write_bag(tmp_path / "first", "sqlite3")
    broken = truncate(write_bag(tmp_path / "second", "sqlite3"))
    settings = BagSettings((DEPTH,), STATE, ACTION, rate=10, base_frame="base_link")
    store = tmp_path / "store.zarr"
    with pytest.raises(RecordingError, match="^second: cannot read the bag"):
        list(import_bags([first, broken], store, settings, CLOUD))
    assert load_store(store).episode_ends.tolist() == [5]

    shutil.rmtree(broken)
    write_bag(broken, "sqlite3", Scene(frames=19))  # re-copied, whole: 19 frames give 6 steps
    results = list(import_bags([first, broken], store, settings, CLOUD))
    assert [(r.source.name, r.skipped, r.steps) for r in results] == [("first", True, 0), ("second", False, 6)]
    again = list(import_bags([first, broken], store, settings, CLOUD))
    assert all(r.skipped for r in again)
    loaded = load_store(store)
    assert loaded.episode_ends.tolist() == [5, 11]
    assert [s["name"] for s in loaded.attrs["imported_sources"]] == ["first", "second"]



def test_a_bag_whose_cameras_differ_from_the_store_is_refused(tmp_path):
    still, moving = write_bag(tmp_path / "still"), write_bag(tmp_path / "moving", scene=Scene(moving=True))
    settings = BagSettings((DEPTH,), STATE, ACTION, rate=10, base_frame="base_link")
    with pytest.raises(RecordingError, match=f"^moving: camera '{DEPTH}' extrinsics differs from the store's"):
        list(import_bags([still, moving], tmp_path / "store.zarr", settings, CLOUD))
    assert load_store(tmp_path / "store.zarr").episode_ends.tolist() == [5]

HDF5_CAMERAS = """
agentview:              # OpenGL axes: identity looks down; rows stored bottom-up
  width: 32
  height: 24
  intrinsics: [[30, 0, 15.5], [0, 30, 11.5], [0, 0, 1]]
  xyz: [0, 0, 1]
  quaternion: [0, 0, 0, 1]
  convention: opengl
  flip_vertical: true
  DEPTH_UNITS
wrist:                  # OpenCV axes, 0.8 m above x = 2, uint16 millimetres
  width: 32
  height: 24
  fx: 30
  fy: 30
  cx: 15.5
  cy: 11.5
  extrinsics: [[1, 0, 0, 2], [0, -1, 0, 0], [0, 0, -1, 0.8], [0, 0, 0, 1]]
  units: mm
"""


#: How the agentview's depth is stored: the YAML that says so, and metres to stored values.
AGENTVIEW_DEPTH = {
    "normalised": ("depth_scale: 2.0", lambda metres: metres / 2.0),
    "z-buffer": ("near: 0.01\n  far: 5.0", lambda metres: (1 - 0.01 / metres) / (1 - 0.01 / 5.0)),
}


def write_hdf5(path: Path, agentview_depth: str = "normalised", demos: tuple[int, ...] = (10, 2), steps: int = 4) -> Path:
    """robomimic's layout: demo n's joints are n + t, its actions 100 n + t. The agentview sees a
    20 cm block on the floor in the first stored rows, the bottom of the image (-y)."""
    with h5py.File(path, "w") as file:
        for n in demos:
            demo = file.create_group(f"data/demo_{n}")
            t = np.arange(steps, dtype=np.float64)[:, None]
            demo["actions"] = 100 * n + t + np.zeros((1, 7))
            demo["obs/robot0_joint_pos"] = n + t + np.zeros((1, 7))
            demo["obs/robot0_gripper_qpos"] = -(n + t) + np.zeros((1, 2))
            demo["obs/robot0_eef_pos"] = np.zeros((steps, 3))
            metres = np.ones((steps, HEIGHT, WIDTH, 1), np.float32)
            metres[:, :6] = 0.8
            demo["obs/agentview_depth"] = AGENTVIEW_DEPTH[agentview_depth][1](metres).astype(np.float32)
            demo["obs/wrist_depth"] = np.full((steps, HEIGHT, WIDTH), 800, np.uint16)
    return path


@pytest.mark.parametrize("agentview_depth", AGENTVIEW_DEPTH)
def test_hdf5_demos_in_numeric_order_with_two_cameras_fused(tmp_path, cli, agentview_depth):
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(HDF5_CAMERAS.replace("DEPTH_UNITS", AGENTVIEW_DEPTH[agentview_depth][0]))
    out = cli("import", "hdf5", write_hdf5(tmp_path / "demos.hdf5", agentview_depth), "--out", tmp_path / "store.zarr",
              "--cameras", cameras, "--state-keys", "robot0_joint_pos,robot0_gripper_qpos", *CROP)
    assert out.index("demo_2") < out.index("demo_10"), out

    store = load_store(tmp_path / "store.zarr")
    assert store.episode_ends.tolist() == [4, 8]
    t = np.arange(4)[:, None]
    for episode, n in enumerate((2, 10)):
        rows = slice(4 * episode, 4 * episode + 4)
        np.testing.assert_array_equal(store.arrays["state"][rows], np.hstack([n + t + np.zeros((1, 7)), -(n + t) + np.zeros((1, 2))]))
        np.testing.assert_array_equal(store.arrays["action"][rows], 100 * n + t + np.zeros((1, 7)))
    for cloud in store.arrays["point_cloud"]:
        block, floor_points = cloud[:, 2] > 0.1, cloud[:, 2] < 0.01
        np.testing.assert_allclose(cloud[block, 2], 0.2, atol=1e-4)
        np.testing.assert_allclose(cloud[floor_points, 2], 0.0, atol=1e-4)
        assert block.sum() > 0 and np.all(block | floor_points)
        assert np.all(cloud[block, 1] < 0)  # flipped: the block is at the bottom of the image
        assert (np.abs(cloud[:, 0] - 2) < 0.5).sum() > 10 and (np.abs(cloud[:, 0]) < 0.6).sum() > 10


@pytest.mark.parametrize("state_keys, camera, expected", [
    ("robot0_joint_pos,robot0_joint_vel", "wrist", r"demos.hdf5 demo_2: no key obs/robot0_joint_vel \(obs/ has agentview_depth, "),
    ("robot0_joint_pos", "side", r"demos.hdf5 demo_2: no key obs/side_depth \(obs/ has "),
])
def test_a_missing_hdf5_key_is_one_line_that_names_it(tmp_path, state_keys, camera, expected):
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(HDF5_CAMERAS.replace("wrist:", f"{camera}:").replace("DEPTH_UNITS", "units: m"))
    message = cli_error("import", "hdf5", write_hdf5(tmp_path / "demos.hdf5"), "--out", tmp_path / "store.zarr",
                        "--cameras", cameras, "--state-keys", state_keys, *CROP)
    assert re.search(expected, message), message
