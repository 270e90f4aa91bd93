"""Issue #23's stand-in recording: the simulator plays a robot whose demonstrations arrive as a robot's
would. From a native demo store made with depth frames (`mp1 demos TASK --images`), this writes
the same episodes three ways and turns each into a store through the robot path:

* `recorded.zarr`: the episodes' depth frames, state and commands through `EpisodeRecorder`, with
  the env's camera and crop box as the pipeline (`env.cloud_pipeline`);
* `bags/episode_NNN/` (ROS 2, sqlite3): a 16UC1 depth topic in millimetres with its camera_info, a
  JointState state topic and a Float64MultiArray command topic at the control rate, and the camera
  pose in `camera_pose.yaml`; imported with `mp1 import bag` into `bag.zarr`;
* `episodes.hdf5` (robomimic layout, float metres) with `cameras.yaml`; imported with
  `mp1 import hdf5` into `hdf5.zarr`.

    python benchmarks/standin.py NATIVE_STORE --task metaworld/button-press --out DIR [--points 512]

`benchmarks/standin.sh` runs the whole comparison (demos, conversion, training with no simulator,
strict evaluation in the simulator).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mp1.data import load_store
from mp1.data.recorder import EpisodeRecorder
from mp1.envs import make_env

RATE_HZ = 10  # stamps only: the import resamples at this rate, one tick per recorded step
DEPTH_TOPIC, STATE_TOPIC, ACTION_TOPIC = "/camera/depth/image_raw", "/joint_states", "/arm/command"
CAMERA_FRAME = "camera_depth_optical_frame"


def opencv_pose(camera) -> np.ndarray:
    """The camera-to-base transform with OpenCV axes (ROS optical frames), from a MuJoCo camera."""
    pose = np.asarray(camera.extrinsics, dtype=np.float64)
    if camera.convention == "opengl":
        pose = pose.copy()
        pose[:3, :3] = pose[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    return pose


def write_bag(folder: Path, depth: np.ndarray, state: np.ndarray, action: np.ndarray, camera) -> None:
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    height, width = depth.shape[1:]
    k = np.asarray(camera.intrinsics, dtype=np.float64)

    def header(ns: int, frame: str = "") -> object:
        return types["std_msgs/msg/Header"](types["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9), frame)

    joints = [f"joint{i}" for i in range(state.shape[1])]
    with Writer(folder, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        image, info, joint_state, command = (
            writer.add_connection(topic, kind, typestore=store) for topic, kind in (
                (DEPTH_TOPIC, "sensor_msgs/msg/Image"), ("/camera/depth/camera_info", "sensor_msgs/msg/CameraInfo"),
                (STATE_TOPIC, "sensor_msgs/msg/JointState"), (ACTION_TOPIC, "std_msgs/msg/Float64MultiArray")))
        for step in range(len(depth)):
            ns = 1_700_000_000 * 10**9 + step * 10**9 // RATE_HZ
            millimetres = np.clip(np.round(depth[step] * 1000.0), 0, 65535).astype(np.uint16)
            roi = types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False)
            messages = (
                (info, types["sensor_msgs/msg/CameraInfo"](header(ns, CAMERA_FRAME), height, width, "plumb_bob", np.zeros(5),
                                                          k.ravel(), np.eye(3).ravel(), np.hstack([k, np.zeros((3, 1))]).ravel(),
                                                          0, 0, roi)),
                (image, types["sensor_msgs/msg/Image"](header(ns, CAMERA_FRAME), height, width, "16UC1", 0, 2 * width,
                                                       millimetres.view(np.uint8).reshape(-1))),
                (joint_state, types["sensor_msgs/msg/JointState"](header(ns), joints, state[step].astype(np.float64),
                                                                  np.zeros(len(joints)), np.zeros(len(joints)))),
                (command, types["std_msgs/msg/Float64MultiArray"](types["std_msgs/msg/MultiArrayLayout"]([], 0),
                                                                  action[step].astype(np.float64))),
            )
            for connection, message in messages:
                writer.write(connection, ns, store.serialize_cdr(message, connection.msgtype))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", help="a native store made with `mp1 demos TASK --images`")
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--points", type=int, default=512)
    args = parser.parse_args()

    native = load_store(args.store, keys=("point_cloud", "state", "action", "depth"))
    env = make_env(args.task, seed=0, **{k: v for k, v in native.attrs["observation"].items()
                                          if k in ("crop_low", "crop_high", "image_size")})
    pipeline = env.cloud_pipeline(args.points)
    env.close()
    camera = pipeline.cameras[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = [native.episode_bounds(i) for i in range(native.num_episodes)]
    depth, state, action = (native.arrays[key] for key in ("depth", "state", "action"))

    with EpisodeRecorder(out / "recorded.zarr", pipeline, attrs={"standin_of": args.task}) as recorder:
        for first, last in episodes[recorder.num_episodes:]:
            for step in range(first, last):
                recorder.record(state[step], action[step], depth=depth[step])
            recorder.end_episode()

    for index, (first, last) in enumerate(episodes):
        folder = out / "bags" / f"episode_{index:03d}"
        if not folder.exists():
            write_bag(folder, depth[first:last], state[first:last], action[first:last], camera)
    pose = opencv_pose(camera)
    (out / "camera_pose.yaml").write_text(yaml.safe_dump({"extrinsics": pose.tolist()}))

    with h5py.File(out / "episodes.hdf5", "w") as file:
        for index, (first, last) in enumerate(episodes):
            demo = file.create_group(f"data/demo_{index}")
            demo.create_dataset(f"obs/{camera.name}_depth", data=depth[first:last])
            demo.create_dataset("obs/robot_state", data=state[first:last])
            demo.create_dataset("actions", data=action[first:last])
    cameras = {camera.name: {"width": camera.width, "height": camera.height, "intrinsics": [list(r) for r in camera.intrinsics],
                             "extrinsics": [list(r) for r in camera.extrinsics], "convention": camera.convention, "units": "m"}}
    (out / "cameras.yaml").write_text(yaml.safe_dump(cameras))

    crop = [*map(str, pipeline.crop_low)], [*map(str, pipeline.crop_high)]
    common = ["--crop-low", *crop[0], "--crop-high", *crop[1], "--num-points", str(args.points)]
    bags = sorted(str(p) for p in (out / "bags").iterdir())
    for command in (
        ["import", "bag", *bags, "--out", str(out / "bag.zarr"), "--depth-topic", DEPTH_TOPIC, "--camera-pose",
         str(out / "camera_pose.yaml"), "--state-topic", STATE_TOPIC, "--action-topic", ACTION_TOPIC, "--rate", str(RATE_HZ),
         *common],
        ["import", "hdf5", str(out / "episodes.hdf5"), "--out", str(out / "hdf5.zarr"), "--cameras", str(out / "cameras.yaml"),
         "--state-keys", "robot_state", *common],
    ):
        subprocess.run([sys.executable, "-m", "mp1", *command], check=True)
    for name in ("recorded", "bag", "hdf5"):
        store = load_store(out / f"{name}.zarr")
        print(f"{name}.zarr: {store.num_episodes} episodes, {store.episode_ends[-1]} steps "
              f"(native: {native.num_episodes}, {native.episode_ends[-1]})")


if __name__ == "__main__":
    main()
