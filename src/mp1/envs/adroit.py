"""Adroit hand tasks (door, hammer, pen) as point-cloud environments, reproducible from a seed.

:class:`AdroitEnv` wraps gymnasium-robotics 1.4.2's ``AdroitHand{Door,Hammer,Pen}-v1`` (the
mujoco-bindings port of the DAPG / mj_envs ``-v0`` tasks, dense reward) and returns DP3-style
observations, the same contract as :class:`mp1.envs.metaworld.MetaWorldEnv`::

    {"point_cloud": (num_points, 3 | 6) float32, world frame,
     "agent_pos":   (24,) float32}

Point cloud: metric depth (84x84 by default, as DP3) from one camera per task, back-projected
to the world frame, cropped to :data:`DEFAULT_CROP` (the table top and everything below it
removed; for pen also the fixed forearm), then farthest point sampling from index 0
(:mod:`mp1.runtime.pointcloud`).

Cameras. DP3 rendered door and hammer from a ``top`` camera that its own copies of the XML
models add (straight down from 1.5 m / 1.1 m) and pen from ``vil_camera``; gymnasium-robotics'
models have no ``top`` and ``vil_camera`` sees the hand from 1.7 m away. So each task moves the
model's ``fixed`` camera (unused by gymnasium-robotics, whose viewer has its own free camera)
to the pose in :data:`CAMERAS`: a position and a look-at point, level with world +z, fovy 45
degrees. The poses were chosen on rendered expert episodes so that the hand and the task's
objects stay in view throughout: the door's handle, latch and swing; the hammer, the nail and
its board at any sampled height; the pen and the goal pen (the only cue of the sampled goal
orientation). The cloud is in the world frame whatever the pose.

Agent state (24-d for all three tasks, DP3's ``observation_sensor``): the joint positions of
the 24-DoF hand, wrist to thumb tip (``WRJ1, WRJ0, FFJ3..FFJ0, MFJ3..MFJ0, RFJ3..RFJ0,
LFJ4..LFJ0, THJ4..THJ0``). Left out: the arm's base joints (door: ``ARTz, ARRx, ARRy, ARRz``;
hammer: ``ARRx, ARRy``; pen has none) and the object joints, exactly as DP3's slices of qpos
(door ``[4:-2]``, hammer ``[2:-7]``, pen ``[:-6]``). The env's raw observation (door 39-d,
hammer 46-d, pen 45-d), which the DAPG experts read, is ``info["full_state"]`` and
:attr:`AdroitEnv.full_state`.

Timing. One :meth:`AdroitEnv.step` is one step of the gymnasium-robotics env: the action is
held for ``frame_skip`` = 5 MuJoCo steps of 2 ms, i.e. 10 ms. Each expert action is applied
for exactly one such step, because that is how the DAPG policies were trained and evaluated:
mj_envs' ``-v0`` envs use the same frame skip (5) and timestep (2 ms), and mjrl's samplers
take one env step per action. DP3 instead held every action for two ``-v0`` steps
(``action_repeat=2``, from its VRL3 experts) in its demonstrations and its evaluations, so its
policies act at 20 ms; mind that when comparing with its numbers. (The DAPG experts happen to
tolerate two-step holding: measured here, door and hammer stay at 10/10 and pen goes from 41
to 42 of 50 episodes.)

Success. ``info["success"]`` is gymnasium-robotics' per-step goal flag: door hinge opened to
>= 1.35 rad; nail driven to within 1 cm of its goal; pen within 7.5 cm of the goal position
and orientation similarity > 0.95. An episode counts as solved when the flag was set on at
least :data:`SUCCESS_MIN_STEPS` (25) steps (:func:`episode_success`). By that rule the DAPG
experts solve door 50/50, hammer 50/50 and pen 41/50 episodes (seeds 0-49, gymnasium-robotics
1.4.2, mujoco 3.3.0; pen's failures drop the pen and score no step). It follows mj_envs'
``evaluate_success`` (door and hammer: more than 25 steps; pen: more than 20, with a looser
goal test, orientation only). DP3's own Adroit runner instead scores the goal flag of the
episode's last steps, and kept a demonstration when its episode reached the goal on at least
10 (repeated) steps.

Seeding. gymnasium-robotics samples the layout in ``reset_model`` from the env's
``np_random`` (door: the door frame's position, 3 uniforms; hammer: the nail board's height;
pen: the goal orientation's two Euler angles), re-seeding it only when ``reset(seed=...)`` is
given. Here the inner env draws from this wrapper's ``np_random``, seeded with ``seed`` at
construction and again by ``reset(seed=s)``: episode ``k`` of ``AdroitEnv(task, seed=s)`` is
the ``k``-th draw of a generator seeded with ``s``, bit for bit (same machine and library
versions), and the first episode has the layout of ``gym.make(id).reset(seed=s)``. Nothing
touches the global numpy state. The dynamics are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from mp1.envs.adroit_experts import (
    DapgPolicy,
    ExpertFileError,
    default_expert_file,
    expert_file_name,
)
from mp1.envs import MissingExtraError, unknown_name
from mp1.envs.base import PointCloudEnv, look_at_quat

TASKS: tuple[str, ...] = ("door", "hammer", "pen")

_ENV_IDS: dict[str, str] = {task: f"AdroitHand{task.capitalize()}-v1" for task in TASKS}

#: The model camera that is moved to the task's pose in :data:`CAMERAS`.
CAMERA = "fixed"

#: Per task: camera position and the world point it looks at (metres, world frame).
CAMERAS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "door": ((0.0, -1.1, 1.3), (0.05, -0.1, 0.2)),
    "hammer": ((-0.3, -0.7, 0.8), (0.0, -0.05, 0.15)),
    "pen": ((0.12, -0.6, 0.6), (0.1, -0.2, 0.23)),
}

#: Per task: workspace box ``(low, high)`` in the world frame (metres). The table top is at
#: z = 0 (+-0.45 in x and y); z >= 5 mm drops it with margin, and everything below it. Door
#: and hammer keep the forearm in view, since the arm's joints are not in ``agent_pos``; pen's
#: forearm is fixed, so its crop ends at the wrist (y >= -0.38) and spends the points on the
#: hand, the pen and the goal pen.
DEFAULT_CROP: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "door": ((-0.5, -0.65, 0.005), (0.7, 0.5, 0.7)),
    "hammer": ((-0.4, -0.6, 0.005), (0.4, 0.3, 0.5)),
    "pen": ((-0.2, -0.38, 0.005), (0.4, 0.1, 0.5)),
}

#: The 24 hand joints whose positions form ``agent_pos``, in model order.
HAND_JOINTS: tuple[str, ...] = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1", "FFJ0",
    "MFJ3", "MFJ2", "MFJ1", "MFJ0",
    "RFJ3", "RFJ2", "RFJ1", "RFJ0",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip

#: An episode is solved when ``info["success"]`` held on at least this many steps.
SUCCESS_MIN_STEPS = 25


def episode_success(step_successes: Sequence[bool]) -> bool:
    """Whether an episode with these per-step ``info["success"]`` flags counts as solved."""
    return int(np.count_nonzero(step_successes)) >= SUCCESS_MIN_STEPS


def _canonical_task(task: str) -> str:
    if task not in TASKS:
        raise unknown_name("Adroit task", task, TASKS)
    return task


class AdroitEnv(PointCloudEnv):
    """One Adroit task with point-cloud observations and the DAPG expert.

    Args:
        task: ``"door"``, ``"hammer"`` or ``"pen"``.
        seed: seeds the layout generator (see the module docstring).
        num_points: points per cloud after farthest point sampling.
        image_size: side of the square depth (and colour) image.
        crop_low, crop_high: workspace box in the world frame; default :data:`DEFAULT_CROP`.
        use_rgb: append colour in [0, 1] to each point (N, 6).
        render_images: also return ``"rgb"`` (H, W, 3) uint8 and ``"depth"`` (H, W) float32
            metric z-depth.
        render_depth: also return ``"depth"`` alone, without the colour frame's rendering: what
            a depth camera gives a stand-in robot (``benchmarks/standin_robot.py``).
        max_episode_steps: truncation limit; default gymnasium-robotics' registered horizon
            (200 for all three tasks, as mj_envs' door and hammer; its pen had 100).
        expert: the imported DAPG policy: an ``.npz`` file, or a folder holding
            ``dapg_<task>_policy.npz``; default: one imported into :func:`expert_cache_dir`,
            else the copy that ships with mp1. Read on the first
            :meth:`expert_action` call, so the environment works without it.
    """

    success_min_steps = SUCCESS_MIN_STEPS

    def __init__(
        self,
        task: str,
        seed: int = 0,
        num_points: int = 512,
        image_size: int = 84,
        crop_low: tuple[float, float, float] | None = None,
        crop_high: tuple[float, float, float] | None = None,
        use_rgb: bool = False,
        render_images: bool = False,
        render_depth: bool = False,
        max_episode_steps: int | None = None,
        cloud_pipeline: dict | None = None,
        expert: str | Path | None = None,
    ) -> None:
        # Imported here, not at the top: it registers the AdroitHand environments and prints a
        # notice about the Dense variants' rewards (not used here) that need not greet every command.
        try:
            import gymnasium_robotics  # noqa: F401
        except ModuleNotFoundError:
            raise MissingExtraError(
                "the Adroit tasks need gymnasium-robotics: pip install 'mp1[adroit]'"
            ) from None

        task = _canonical_task(task)
        spec = gym.spec(_ENV_IDS[task])
        inner = spec.make().unwrapped  # no TimeLimit / order / checker wrappers
        cam_id = inner.model.camera(CAMERA).id
        pos, target = CAMERAS[task]
        inner.model.cam_pos[cam_id] = pos
        inner.model.cam_quat[cam_id] = look_at_quat(pos, target)
        task_low, task_high = DEFAULT_CROP[task]
        crop_box = (task_low if crop_low is None else crop_low, task_high if crop_high is None else crop_high)
        super().__init__(
            inner, task, seed, num_points, image_size, CAMERA, crop_box, len(HAND_JOINTS), use_rgb, render_images,
            max_episode_steps or spec.max_episode_steps, cloud_pipeline, render_depth,
        )
        self.action_space = inner.action_space
        self.expert_path = self._expert_file(expert)
        self._expert: DapgPolicy | None = None
        self._hand_qpos = np.array([inner.model.jnt_qposadr[inner.model.joint(j).id] for j in HAND_JOINTS])

    def agent_pos(self) -> npt.NDArray[np.float32]:
        return self._env.data.qpos[self._hand_qpos].astype(np.float32)

    def expert_action(self) -> npt.NDArray[np.float32]:
        """The DAPG policy's mean action for the current state, clipped to [-1, 1] (the env
        clips the same way, so demonstrations stay in the action space).

        Raises:
            FileNotFoundError: the expert has not been imported (the message says how).
            ExpertFileError: the file is unreadable or belongs to another task.
        """
        if self._expert is None:
            self._expert = self._load_expert()
        return np.clip(self._expert(self.full_state), -1.0, 1.0).astype(np.float32)

    def _expert_file(self, expert: str | Path | None) -> Path:
        if expert is None:
            return default_expert_file(self.task)
        path = Path(expert).expanduser()
        return path if path.suffix == ".npz" else path / expert_file_name(self.task)

    def _load_expert(self) -> DapgPolicy:
        if not self.expert_path.is_file():
            raise FileNotFoundError(
                f"no DAPG expert for {self.task!r} at {self.expert_path}. Fetch "
                "https://github.com/aravindr93/hand_dapg and run `mp1 adroit import-experts PATH` "
                "with PATH its clone (or the folder of its dapg/policies/*.pickle)"
            )
        policy = DapgPolicy.load(self.expert_path)
        obs_dim, act_dim = self._env.observation_space.shape[0], self.action_space.shape[0]
        if (policy.obs_dim, policy.act_dim) != (obs_dim, act_dim):
            raise ExpertFileError(
                f"{self.expert_path}: a {policy.obs_dim}->{policy.act_dim} policy, but {self.task} "
                f"needs {obs_dim}->{act_dim}"
            )
        return policy
