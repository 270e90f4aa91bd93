"""Import rate of `mp1 import bag`: frames per second from a bag to a committed episode.

Builds a synthetic bag per storage format in a temporary folder: ``--frames`` 640x480 16UC1
depth frames of a floor with a box sliding on it, seen from 1 m above, with camera_info,
/tf_static, joint states and commands, every stream at 30 Hz. Imports each at 30 Hz (every frame
is a step) into 1024-point clouds of a 60 x 40 cm workspace, and times, on the same frames:

* the whole import (both readings of the bag, resampling, clouds, the store's commit);
* ``CloudMaker`` alone, built and called on the decoded frames in a loop;

each as wall clock and as this process's CPU time: on a shared machine the latter leaves out
the time other processes held the cores. What the import adds to the cloud maker (reading,
resampling, the store's creation and commit) is the difference. Each bag is imported once
untimed first (Python's lazy imports of the readers and zarr's codecs are a one-time cost of
the process, not of the frames), then ``--repeats`` times into fresh stores; the median counts.
Usage:

    python benchmarks/import_rate.py [--frames 300] [--repeats 3] [--formats sqlite3,mcap,ros1] [--out benchmarks/results/perception]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Ros2Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mp1.data.importers import CloudSettings
from mp1.data.importers.bag import BagSettings, import_bags
from mp1.runtime.perception import Camera, CloudMaker, CloudPipeline

WIDTH, HEIGHT, RATE = 640, 480, 30.0
K = [[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]]
DOWN = np.diag([1.0, -1.0, -1.0])  # optical axes looking along the base's -z
#: A 60 x 40 cm workspace: about 86,000 of the 307,200 pixels fall in it (Meta-World's views: 15-46,000).
CLOUD = CloudSettings((-0.3, -0.2, -0.02), (0.3, 0.2, 0.3), 1024)
DEPTH, STATE, ACTION = "/camera/depth/image_rect_raw", "/joint_states", "/joint_commands"
START_NS, PERIOD_NS = 1_700_000_000 * 10**9, round(1e9 / RATE)


def scene(frame: int) -> np.ndarray:
    """Millimetres: the floor 1 m away, a 12 cm box that slides across it, a few dropouts."""
    depth = np.full((HEIGHT, WIDTH), 1000, np.uint16)
    left = 160 + 2 * frame % 320
    depth[200:290, left:left + 90] = 880
    depth[::37, ::53] = 0
    return depth


def write_bag(path: Path, kind: str, frames: int) -> None:
    ros1 = kind == "ros1"
    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    if ros1:
        store.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    types = store.types
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr

    def header(ns: int, frame: str = "") -> object:
        stamp = types["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9)
        return types["std_msgs/msg/Header"](*((0,) if ros1 else ()), stamp, frame)

    writer = Ros1Writer(path) if ros1 else Ros2Writer(
        path, version=9, storage_plugin=StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
    with writer:
        def connect(topic: str, msgtype: str) -> object:
            return writer.add_connection(topic, msgtype, typestore=store)

        tf, info, image, state, action = (
            connect("/tf_static", "tf2_msgs/msg/TFMessage"), connect("/camera/depth/camera_info", "sensor_msgs/msg/CameraInfo"),
            connect(DEPTH, "sensor_msgs/msg/Image"), connect(STATE, "sensor_msgs/msg/JointState"),
            connect(ACTION, "std_msgs/msg/Float64MultiArray"))
        pose = types["geometry_msgs/msg/Transform"](types["geometry_msgs/msg/Vector3"](0.0, 0.0, 1.0),
                                                     types["geometry_msgs/msg/Quaternion"](1.0, 0.0, 0.0, 0.0))
        link = types["geometry_msgs/msg/TransformStamped"](header(START_NS, "base_link"), "camera_depth_optical_frame", pose)
        writer.write(tf, START_NS, serialize(types["tf2_msgs/msg/TFMessage"]([link]), "tf2_msgs/msg/TFMessage"))
        joints = [f"joint{i}" for i in range(7)]
        for k in range(frames):
            ns = START_NS + k * PERIOD_NS
            roi = types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False)
            camera_info = types["sensor_msgs/msg/CameraInfo"](
                header(ns, "camera_depth_optical_frame"), HEIGHT, WIDTH, "plumb_bob", np.zeros(5), np.ravel(K),
                np.eye(3).ravel(), np.hstack([K, np.zeros((3, 1))]).ravel(), 0, 0, roi)
            frame = types["sensor_msgs/msg/Image"](header(ns, "camera_depth_optical_frame"), HEIGHT, WIDTH, "16UC1", 0,
                                                   2 * WIDTH, scene(k).view(np.uint8).reshape(-1))
            positions = np.sin(0.01 * k + np.arange(7))
            joint_state = types["sensor_msgs/msg/JointState"](header(ns), joints, positions, np.zeros(7), np.zeros(7))
            command = types["std_msgs/msg/Float64MultiArray"](types["std_msgs/msg/MultiArrayLayout"]([], 0), positions + 0.01)
            writer.write(info, ns, serialize(camera_info, "sensor_msgs/msg/CameraInfo"))
            writer.write(image, ns + 3_000_000, serialize(frame, "sensor_msgs/msg/Image"))
            writer.write(state, ns + 1_000_000, serialize(joint_state, "sensor_msgs/msg/JointState"))
            writer.write(action, ns + 1_000_000, serialize(command, "std_msgs/msg/Float64MultiArray"))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def timed(function: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def median_timing(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """The median (wall, CPU) seconds of ``repeats`` calls."""
    walls, cpus = zip(*(timed(function) for _ in range(repeats)))
    return float(np.median(walls)), float(np.median(cpus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="timed imports per format (median)")
    parser.add_argument("--formats", default="sqlite3,mcap,ros1")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/perception"))
    args = parser.parse_args()
    settings = BagSettings((DEPTH,), STATE, ACTION, RATE, base_frame="base_link")
    camera = Camera(DEPTH, WIDTH, HEIGHT, K, np.block([[DOWN, np.array([[0.0], [0.0], [1.0]])], [np.zeros((1, 3)), 1.0]]))
    pipeline = CloudPipeline((camera,), CLOUD.crop_low, CLOUD.crop_high, CLOUD.num_points)
    frames = [scene(k) for k in range(args.frames)]

    def make_clouds() -> None:  # built in the timing, as an import builds it
        maker = CloudMaker(pipeline)
        for frame in frames:
            maker(frame)

    maker_wall, maker_cpu = median_timing(make_clouds, args.repeats)
    report = {
        "frames": args.frames, "repeats": args.repeats, "size": [WIDTH, HEIGHT], "num_points": CLOUD.num_points, "rate_hz": RATE,
        "crop": [CLOUD.crop_low, CLOUD.crop_high], "pixels_in_crop": len(CloudMaker(pipeline).points(frames[0])),
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "cores": os.cpu_count(),
        "versions": {"numpy": np.__version__, "rosbags": version("rosbags")}, "load_average_before": os.getloadavg(),
        "cloud_maker_alone": {"frames_per_s_wall": args.frames / maker_wall, "frames_per_s_cpu": args.frames / maker_cpu},
        "imports": {},
    }
    print(f"CloudMaker alone: {args.frames / maker_wall:.0f} frames/s wall, {args.frames / maker_cpu:.0f} per CPU second")
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.formats.split(","):
            bag = Path(folder) / ("bench.bag" if kind == "ros1" else f"bench_{kind}")
            write_bag(bag, kind, args.frames)
            stores = iter(Path(folder) / f"{kind}_{attempt}.zarr" for attempt in range(args.repeats + 1))
            steps = next(import_bags([bag], next(stores), settings, CLOUD)).steps  # the untimed first import
            wall, cpu = median_timing(lambda: list(import_bags([bag], next(stores), settings, CLOUD)), args.repeats)
            overhead = 1000 * (cpu / steps - maker_cpu / args.frames)
            report["imports"][kind] = {"steps": steps, "frames_per_s_wall": steps / wall, "frames_per_s_cpu": steps / cpu,
                                       "import_ms_per_frame_beyond_cloud_maker_cpu": overhead}
            print(f"{kind:8} {steps} steps: {steps / wall:.0f} frames/s wall, {steps / cpu:.0f} per CPU second; "
                  f"{overhead:.2f} ms of CPU per frame beyond the cloud maker")
    report["load_average_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "import_rate.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out / 'import_rate.json'} (load average {report['load_average_after'][0]:.1f} on "
          f"{os.cpu_count()} cores: indicative only on a shared machine)")


if __name__ == "__main__":
    main()
