"""ROS 1 bags (.bag) and ROS 2 bags (sqlite3 or MCAP storage) to episodes, read without a ROS
installation through `rosbags`. One bag is one episode.

Streams: depth images (sensor_msgs/Image, 16UC1 = uint16 units of ``depth_scale``, millimetres
by default, or 32FC1 = metres), each with its sensor_msgs/CameraInfo (K, width and height; the
images are taken as rectified: distortion is not applied); the robot's state and the commanded
action (sensor_msgs/JointState positions, or std_msgs/Float64MultiArray data); and, for cameras
placed by TF, tf2_msgs/TFMessage on /tf_static and /tf. The streams are resampled to one
control rate by the rules of `mp1.data.importers.sync`.

Timestamps: header stamps where a message has a header (images, JointState, TF); the bag's
receive time where it has none (Float64MultiArray) or where a stream's stamps are all zero.

Camera poses (camera-to-base): given per depth topic (``camera_poses``), or looked up in TF as
``base_frame`` <- the images' frame_id, composing the chain of links. A chain of static links is
the camera's calibrated extrinsics. A chain with a link on /tf moves the camera: its pose at each
tick uses each link's latest transform (held like any stream, so gaps are refused), and the
pipeline records identity extrinsics for that camera, since its pose is given with every frame.

The bag is read twice: first for the stamps (read from the first bytes of images and
JointState messages), the camera calibration and the serialised state, action and /tf messages,
of which only the ones the ticks hold are deserialised; then for the images the ticks hold,
decoded with numpy over the message buffer.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mp1.data.importers.common import (
    CloudSettings, Episode, ImportResult, Pose, RecordingError, Source, Step, import_episodes, load_yaml,
    pose_from_entry, transforms,
)
from mp1.data.importers.sync import NS, Schedule, Stream, synchronise
from mp1.runtime.perception import Camera

try:
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.interfaces import Connection
    from rosbags.rosbag1 import ReaderError as Ros1ReaderError
    from rosbags.rosbag2 import ReaderError as Ros2ReaderError
    from rosbags.typesys import Stores, get_typestore
    from rosbags.typesys.store import Typestore
except ModuleNotFoundError:
    from mp1.envs import MissingExtraError

    raise MissingExtraError("importing bags needs rosbags: pip install 'mp1[robot]'") from None

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC, TF_MOVING = "/tf_static", "/tf"
DEPTH_DTYPES = {"16UC1": np.dtype(np.uint16), "mono16": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}
#: Millimetres: what ROS drivers put in 16UC1 depth images.
DEFAULT_DEPTH_SCALE = 0.001
#: Errors of a bag that cannot be read: truncated, not closed by its recorder (a ROS 2 bag
#: without its metadata.yaml: FileNotFoundError), or damaged.
READ_ERRORS = (AnyReaderError, Ros1ReaderError, Ros2ReaderError, FileNotFoundError)

Handler = Callable[["AnyReader", Connection, int, int, Any], None]


@dataclass(frozen=True)
class BagSettings:
    """What to read from the bags and how to resample it.

    Args:
        depth_topics: one per camera; a camera is named by its topic.
        state_topic, action_topic: JointState or Float64MultiArray topics.
        rate: control rate of the episodes, Hz.
        camera_info_topics: one per depth topic; by default ``camera_info`` in the depth topic's
            namespace (/camera/depth/image_rect_raw -> /camera/depth/camera_info).
        base_frame: TF frame of the robot's base, for cameras without a pose in ``camera_poses``.
        camera_poses: camera-to-base 4x4 per depth topic (see `load_camera_poses`).
        joint_names: select and order the joints of JointState topics; Float64MultiArray topics
            are taken whole.
        depth_scale: metres per unit of 16UC1 images (default millimetres); 32FC1 is metres.
        max_gap: seconds a stream may go without a message at a tick (default 2 / rate).
        max_offset: seconds a stream's clock may differ from the others' (see `sync`).
    """

    depth_topics: tuple[str, ...]
    state_topic: str
    action_topic: str
    rate: float
    camera_info_topics: tuple[str, ...] = ()
    base_frame: str | None = None
    camera_poses: Mapping[str, Pose] = field(default_factory=dict)
    joint_names: tuple[str, ...] = ()
    depth_scale: float | None = None
    max_gap: float | None = None
    max_offset: float = 1.0

    def __post_init__(self) -> None:
        if not self.depth_topics:
            raise RecordingError("give at least one depth topic")
        if self.camera_info_topics and len(self.camera_info_topics) != len(self.depth_topics):
            raise RecordingError(f"{len(self.camera_info_topics)} camera_info topics for {len(self.depth_topics)} "
                                 f"depth topics: give one per depth topic, in the same order, or none")
        if unknown := sorted(set(self.camera_poses) - set(self.depth_topics)):
            raise RecordingError(f"a camera pose is given for {unknown[0]}, which is not a depth topic")
        for name in ("rate", "depth_scale", "max_gap", "max_offset"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise RecordingError(f"{name} must be positive, got {value}")

    @property
    def gap(self) -> float:
        return 2.0 / self.rate if self.max_gap is None else self.max_gap

    def info_topic(self, camera: int) -> str:
        if self.camera_info_topics:
            return self.camera_info_topics[camera]
        return self.depth_topics[camera].rsplit("/", 1)[0] + "/camera_info"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, recorded in the store it creates."""
        data = dataclasses.asdict(self)
        data["camera_poses"] = {topic: np.asarray(pose).tolist() for topic, pose in self.camera_poses.items()}
        return {**data, "max_gap": self.gap}


def load_camera_poses(path: str | os.PathLike, depth_topics: Iterable[str]) -> dict[str, Pose]:
    """Camera-to-base poses from YAML: per depth topic, ``extrinsics`` (4x4) or ``xyz`` and
    ``quaternion`` (x, y, z, w). With one depth topic, the entry may stand alone, unkeyed."""
    data = load_yaml(path, "camera poses")
    topics = list(depth_topics)
    if len(topics) == 1 and any(key in data for key in ("extrinsics", "xyz")):
        data = {topics[0]: data}
    return {topic: pose_from_entry(entry, f"camera pose of {topic} in {path}") for topic, entry in data.items()}


def import_bags(
    bags: Iterable[str | os.PathLike], out: str | os.PathLike, settings: BagSettings, cloud: CloudSettings
) -> Iterator[ImportResult]:
    """Imports each bag, in order, as one episode of the store at ``out``; bags the store already
    holds are skipped, so that an interrupted import resumes when run again."""
    paths = [Path(bag) for bag in bags]
    if missing := [path for path in paths if not path.exists()]:
        raise RecordingError(f"no bag at {missing[0]}")
    attrs = {"imported_from": "bag", "import_settings": {**settings.to_dict(), **dataclasses.asdict(cloud)}}
    return import_episodes(out, attrs, [(Source.of(path), functools.partial(open_bag, path, settings, cloud))
                                        for path in paths])


@contextmanager
def open_bag(path: Path, settings: BagSettings, cloud: CloudSettings) -> Iterator[Episode]:
    """The bag as an episode whose steps are read while they are recorded."""
    try:
        with AnyReader([path], default_typestore=_message_types()) as reader:
            plan = _plan(reader, settings)
            yield Episode(cloud.pipeline(plan.cameras), _steps(reader, plan), len(plan.schedule.ticks) / settings.rate)
    except READ_ERRORS as error:
        raise RecordingError(f"cannot read the bag, truncated or damaged? ({error}); re-copy it or repair it "
                             f"(ros2 bag reindex, rosbag reindex, mcap recover)") from None


@functools.cache
def _message_types() -> Typestore:
    """Message definitions for bags that do not embed theirs (ROS 2 before Iron): the standard
    messages read here have not changed since. Built once: it takes some tens of milliseconds."""
    return get_typestore(Stores.LATEST)


def header_stamp(raw: Any, ros2: bool) -> int:
    """The header stamp (ns) of a serialised message that starts with a std_msgs/Header, read
    without deserialising it: images are large and the first pass needs only their stamps. ROS 1
    (after the uint32 seq) and CDR (after its 4-byte encapsulation, whose second byte is odd for
    little-endian) both put the stamp's seconds and nanoseconds at bytes 4 to 12."""
    order = ">" if ros2 and not raw[1] & 1 else "<"
    seconds, nanoseconds = struct.unpack_from(order + "iI", raw, 4)
    return seconds * NS + nanoseconds


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def depth_dtype(encoding: str, topic: str) -> np.dtype:
    if encoding not in DEPTH_DTYPES:
        raise RecordingError(f"{topic} has encoding {encoding!r}; expected 16UC1 or 32FC1 depth")
    return DEPTH_DTYPES[encoding]


def depth_frame(message: Any, topic: str) -> npt.NDArray[Any]:
    """An Image's pixels as a (height, width) array over the message's buffer (rows may be padded)."""
    dtype = depth_dtype(message.encoding, topic).newbyteorder(">" if message.is_bigendian else "<")
    height, width, step = message.height, message.width, message.step
    if step < width * dtype.itemsize or len(message.data) < step * height:
        raise RecordingError(f"{topic}: an image holds {len(message.data)} bytes for {height} rows of {step}")
    frame = np.ndarray((height, width), dtype, buffer=message.data, strides=(step, dtype.itemsize))
    return frame if dtype.isnative else frame.astype(dtype.newbyteorder("="))


class _Images:
    """A depth topic in the first pass: stamps, and the numbers of its messages in the bag's
    reading order, by which the second pass finds the frames it needs."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.stamps: list[int] = []
        self.received: list[int] = []
        self.numbers: list[int] = []
        self.first: Any = None

    def add(self, reader: AnyReader, connection: Connection, number: int, received: int, raw: Any) -> None:
        stamp = header_stamp(raw, reader.is2)
        if self.first is None:
            self.first = _checked(reader, connection, raw, stamp)
        self.stamps.append(stamp)
        self.received.append(received)
        self.numbers.append(number)

    def stream(self) -> Stream:
        return Stream.sorted(self.topic, self.stamps, self.received, self.numbers)


def _checked(reader: AnyReader, connection: Connection, raw: Any, stamp: int) -> Any:
    """A topic's first message, deserialised, after checking the stamp read from its bytes."""
    message = reader.deserialize(raw, connection.msgtype)
    if stamp != stamp_ns(message.header.stamp):
        raise RecordingError(f"{connection.topic}: cannot read the messages' header stamps")
    return message


class _CameraInfo:
    """A camera_info topic: its first message (a calibration does not change during a bag)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.message: Any = None

    def add(self, reader: AnyReader, connection: Connection, number: int, received: int, raw: Any) -> None:
        if self.message is None:
            self.message = reader.deserialize(raw, connection.msgtype)

    def intrinsics(self) -> npt.NDArray[np.float64]:
        if self.message is None:
            raise RecordingError(f"{self.topic} has no messages")
        k = getattr(self.message, "k", None)  # ROS 1 calls it K
        return np.asarray(self.message.K if k is None else k, dtype=np.float64).reshape(3, 3)


class _Vectors:
    """A state or action topic: JointState positions (the ``joint_names`` ones, in that order,
    when given) or Float64MultiArray data. The first pass keeps the serialised messages; only
    those a tick holds are deserialised, since a robot may publish joint states at 1 kHz and
    deserialising one takes a good part of a millisecond."""

    def __init__(self, topic: str, joint_names: tuple[str, ...]) -> None:
        self.topic = topic
        self.joint_names = joint_names
        self.stamps: list[int] = []
        self.received: list[int] = []
        self.messages: list[tuple[Connection, bytes]] = []
        self._names: tuple[str, ...] | None = None
        self._index: npt.NDArray[np.int64] | None = None

    def add(self, reader: AnyReader, connection: Connection, number: int, received: int, raw: Any) -> None:
        if connection.msgtype == JOINT_STATE:
            stamp = header_stamp(raw, reader.is2)
            if not self.messages:
                _checked(reader, connection, raw, stamp)
        else:
            stamp = received
        self.stamps.append(stamp)
        self.received.append(received)
        self.messages.append((connection, bytes(raw)))  # a copy: a view would keep a whole chunk alive

    def stream(self) -> Stream:
        return Stream.sorted(self.topic, self.stamps, self.received, np.arange(len(self.messages)))

    def values(self, reader: AnyReader, held: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The vectors of the held messages (indices into the messages), one row per tick."""
        vectors = {int(index): self._vector(reader, *self.messages[index]) for index in np.unique(held)}
        lengths = {len(vector) for vector in vectors.values()}
        if len(lengths) > 1:
            raise RecordingError(f"{self.topic}: messages hold {' and '.join(map(str, sorted(lengths)))} values")
        return np.stack([vectors[int(index)] for index in held])

    def _vector(self, reader: AnyReader, connection: Connection, raw: bytes) -> npt.NDArray[np.float64]:
        message = reader.deserialize(raw, connection.msgtype)
        if connection.msgtype != JOINT_STATE:
            values = np.asarray(message.data, dtype=np.float64)
        else:
            values = self._positions(message)
        if len(values) == 0:
            raise RecordingError(f"{self.topic}: a message holds no values")
        return values

    def _positions(self, message: Any) -> npt.NDArray[np.float64]:
        names, positions = tuple(message.name), np.asarray(message.position, dtype=np.float64)
        if len(positions) != len(names):
            raise RecordingError(f"{self.topic}: a message holds {len(positions)} positions for {len(names)} joints")
        if not self.joint_names:
            return positions
        if names != self._names:
            if missing := [name for name in self.joint_names if name not in names]:
                raise RecordingError(f"{self.topic} has no joint {missing[0]!r} (its joints: {', '.join(names)})")
            self._names, self._index = names, np.array([names.index(name) for name in self.joint_names])
        return positions[self._index]


@dataclass
class _Link:
    """A TF link on /tf: its transforms (parent <- child) as they were published."""

    parent: str
    stamps: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    translations: list[tuple[float, float, float]] = field(default_factory=list)
    rotations: list[tuple[float, float, float, float]] = field(default_factory=list)


class _Transforms:
    """The bag's TF tree: each child frame's parent and transform, static or per message. /tf is
    deserialised only when the static links do not place a camera: robots publish it fast."""

    def __init__(self) -> None:
        self.static: dict[str, tuple[str, Pose]] = {}
        self.moving: dict[str, _Link] = {}
        self._unread: list[tuple[Connection, int, bytes]] = []

    def add_static(self, reader: AnyReader, connection: Connection, number: int, received: int, raw: Any) -> None:
        for transform in reader.deserialize(raw, connection.msgtype).transforms:
            translation, rotation = self._parts(transform)
            self.static[transform.child_frame_id] = (transform.header.frame_id, transforms(translation, rotation))

    def add_moving(self, reader: AnyReader, connection: Connection, number: int, received: int, raw: Any) -> None:
        self._unread.append((connection, received, bytes(raw)))

    def _read_moving(self, reader: AnyReader) -> None:
        for connection, received, raw in self._unread:
            for transform in reader.deserialize(raw, connection.msgtype).transforms:
                link = self.moving.setdefault(transform.child_frame_id, _Link(transform.header.frame_id))
                if link.parent != transform.header.frame_id:
                    raise RecordingError(f"TF: frame {transform.child_frame_id} changes parent from {link.parent} "
                                         f"to {transform.header.frame_id}")
                translation, rotation = self._parts(transform)
                link.stamps.append(stamp_ns(transform.header.stamp))
                link.received.append(received)
                link.translations.append(translation)
                link.rotations.append(rotation)
        self._unread = []

    @staticmethod
    def _parts(transform: Any) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
        t, r = transform.transform.translation, transform.transform.rotation
        return (t.x, t.y, t.z), (r.x, r.y, r.z, r.w)

    def parent(self, child: str) -> str | None:
        if child in self.moving:
            return self.moving[child].parent
        return self.static[child][0] if child in self.static else None

    def stream(self, child: str) -> Stream:
        link = self.moving[child]
        return Stream.sorted(f"{TF_MOVING} {link.parent} -> {child}", link.stamps, link.received,
                             transforms(link.translations, link.rotations))

    def chain(self, reader: AnyReader, base: str, frame: str) -> tuple[list[str], list[str]]:
        """The links (by child frame) from the frames' nearest common ancestor down to ``base``
        and down to ``frame``."""
        up_base, up_frame = self._ancestry(base), self._ancestry(frame)
        if not set(up_base) & set(up_frame) and self._unread:
            self._read_moving(reader)
            up_base, up_frame = self._ancestry(base), self._ancestry(frame)
        common = next((ancestor for ancestor in up_frame if ancestor in up_base), None)
        if common is None:
            raise RecordingError(f"TF has no path from {base} to {frame} (their trees end at {up_base[-1]} "
                                 f"and {up_frame[-1]})")
        return up_base[:up_base.index(common)], up_frame[:up_frame.index(common)]

    def _ancestry(self, frame: str) -> list[str]:
        frames = [frame]
        while (parent := self.parent(frames[-1])) is not None:
            if parent in frames:
                raise RecordingError(f"TF: frames {' -> '.join(frames)} -> {parent} form a loop")
            frames.append(parent)
        return frames


@dataclass
class _Plan:
    """What the second pass needs: the connections in reading order, the cameras, the ticks, and
    per tick each camera's frame (by message number), pose where it moves, state and action."""

    connections: list[Connection]
    cameras: list[Camera]
    schedule: Schedule
    frames: npt.NDArray[np.int64]  # (ticks, cameras)
    poses: list[npt.NDArray[np.float64] | None]  # per camera: (ticks, 4, 4) if it moves
    states: npt.NDArray[np.float64]
    actions: npt.NDArray[np.float64]


def _connections(reader: AnyReader, topic: str, msgtypes: tuple[str, ...]) -> list[Connection]:
    found = [connection for connection in reader.connections if connection.topic == topic]
    if not found:
        topics = sorted({connection.topic for connection in reader.connections})
        listed = ", ".join(topics[:12]) + (", ..." if len(topics) > 12 else "")
        raise RecordingError(f"no topic {topic} in the bag (it has {listed})")
    if wrong := [c.msgtype for c in found if c.msgtype not in msgtypes]:
        raise RecordingError(f"{topic} carries {wrong[0]}; expected {' or '.join(msgtypes)}")
    return found


class _FirstPass:
    """Everything but the image data, read once through the bag (the connections in the order
    both passes read them, so that a message's number is the same in both)."""

    def __init__(self, reader: AnyReader, settings: BagSettings) -> None:
        self.images = [_Images(topic) for topic in settings.depth_topics]
        self.infos = [_CameraInfo(settings.info_topic(index)) for index in range(len(self.images))]
        self.state, self.action = (_Vectors(topic, settings.joint_names)
                                   for topic in (settings.state_topic, settings.action_topic))
        self.tf = _Transforms()
        roles: list[tuple[str, tuple[str, ...], Handler]] = [
            *((image.topic, (IMAGE,), image.add) for image in self.images),
            *((info.topic, (CAMERA_INFO,), info.add) for info in self.infos),
            (self.state.topic, (JOINT_STATE, FLOAT_ARRAY), self.state.add),
            (self.action.topic, (JOINT_STATE, FLOAT_ARRAY), self.action.add),
        ]
        if unplaced := [topic for topic in settings.depth_topics if topic not in settings.camera_poses]:
            roles += self._tf_roles(reader, settings.base_frame, unplaced[0])
        handlers: dict[str, list[Handler]] = {}
        self.connections: list[Connection] = []
        for topic, msgtypes, handler in roles:
            found = _connections(reader, topic, msgtypes)
            if topic not in handlers:
                self.connections += found
            handlers.setdefault(topic, []).append(handler)
        for number, (connection, received, raw) in enumerate(reader.messages(self.connections)):
            for handler in handlers[connection.topic]:
                handler(reader, connection, number, received, raw)

    def _tf_roles(self, reader: AnyReader, base: str | None, camera: str) -> list[tuple[str, tuple[str, ...], Handler]]:
        if base is None:
            raise RecordingError(f"no pose for {camera}: give a base frame (to look it up in TF) or a camera pose")
        present = {connection.topic for connection in reader.connections}
        roles = [(topic, (TF_MESSAGE,), add) for topic, add in ((TF_STATIC, self.tf.add_static),
                                                               (TF_MOVING, self.tf.add_moving)) if topic in present]
        if not roles:
            raise RecordingError(f"no {TF_STATIC} or {TF_MOVING} topic in the bag to place {camera} in {base}; "
                                 f"give a camera pose instead")
        return roles

    def chain(self, reader: AnyReader, base: str, image: _Images) -> tuple[list[str], list[str]]:
        """The TF links from the base and the camera's frame up to their common ancestor."""
        if not image.first.header.frame_id:
            raise RecordingError(f"{image.topic}: the images name no frame_id to look up in TF")
        return self.tf.chain(reader, base, image.first.header.frame_id)


def _plan(reader: AnyReader, settings: BagSettings) -> _Plan:
    """The first pass, and the resampling of what it read."""
    bag = _FirstPass(reader, settings)
    image_streams = [image.stream() for image in bag.images]
    streams = {stream.name: stream for stream in [*image_streams, bag.state.stream(), bag.action.stream()]}
    chains = {image.topic: bag.chain(reader, settings.base_frame, image) for image in bag.images
              if image.topic not in settings.camera_poses and settings.base_frame is not None}
    links = {child: bag.tf.stream(child) for to_base, to_camera in chains.values() for child in to_base + to_camera
             if child in bag.tf.moving}
    streams.update((link.name, link) for link in links.values())
    schedule = synchronise(list(streams.values()), settings.rate, settings.gap, settings.max_offset)

    def compose(children: list[str]) -> npt.NDArray[np.float64]:
        """The transform down a chain of links: static, or per tick where a link is on /tf."""
        pose = np.eye(4)
        for child in reversed(children):
            link = links[child].values[schedule.held[links[child].name]] if child in links else bag.tf.static[child][1]
            pose = pose @ link
        return pose

    cameras, poses = [], []
    for image, info in zip(bag.images, bag.infos):
        if image.topic in settings.camera_poses:
            pose = np.asarray(settings.camera_poses[image.topic], dtype=np.float64)
        else:
            to_base, to_camera = chains[image.topic]
            pose = np.linalg.inv(compose(to_base)) @ compose(to_camera)
        moving = pose.ndim == 3
        cameras.append(_camera(image, info, np.eye(4) if moving else pose, settings.depth_scale))
        poses.append(pose if moving else None)
    frames = np.stack([stream.values[schedule.held[stream.name]] for stream in image_streams], axis=1)
    states, actions = (vectors.values(reader, streams[vectors.topic].values[schedule.held[vectors.topic]])
                       for vectors in (bag.state, bag.action))
    return _Plan(bag.connections, cameras, schedule, frames, poses, states, actions)


def _camera(image: _Images, info: _CameraInfo, pose: Pose, depth_scale: float | None) -> Camera:
    """A depth topic's camera, calibrated by its camera_info, placed at ``pose``."""
    encoding = image.first.encoding
    if depth_dtype(encoding, image.topic).kind == "f" and depth_scale is not None:
        raise RecordingError(f"{image.topic} is {encoding} (metres): a depth scale applies to 16UC1 images only")
    intrinsics = info.intrinsics()
    return Camera(image.topic, int(info.message.width), int(info.message.height), intrinsics, pose,
                  depth_scale=DEFAULT_DEPTH_SCALE if depth_scale is None else depth_scale)


def _steps(reader: AnyReader, plan: _Plan) -> Iterator[Step]:
    """The second pass: each tick's frames, decoded as their messages come, kept only until the
    last tick that holds them (a frame or two per camera in a bag written in stamp order)."""
    last_use = {int(number): tick for tick, row in enumerate(plan.frames) for number in row}
    pending: dict[int, npt.NDArray[Any]] = {}
    tick, count = 0, len(plan.frames)
    for number, (connection, _, raw) in enumerate(reader.messages(plan.connections)):
        if number not in last_use:
            continue
        pending[number] = depth_frame(reader.deserialize(raw, connection.msgtype), connection.topic)
        while tick < count and all(int(n) in pending for n in plan.frames[tick]):
            row = [int(n) for n in plan.frames[tick]]
            poses = None if all(p is None for p in plan.poses) else [None if p is None else p[tick] for p in plan.poses]
            yield Step(plan.states[tick], plan.actions[tick], [pending[n] for n in row], poses, plan.schedule.seconds(tick))
            for n in row:
                if last_use[n] == tick:
                    del pending[n]
            tick += 1
        if tick == count:
            return
    raise RecordingError(f"the bag held {tick} of the {count} steps' images on the second reading")
