"""Meta-World v3 tasks as point-cloud environments, reproducible from a seed.

:class:`MetaWorldEnv` wraps one Farama ``metaworld`` 3.1.1 single-task, goal-observable
environment (``metaworld.env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE``: the class the
benchmark constructors build on, without their task-sampling and auto-reset wrappers) and
returns DP3-style observations::

    {"point_cloud": (num_points, 3 | 6) float32, world frame,
     "agent_pos":   (9,) float32}

Point cloud: metric depth from one camera (``mujoco.Renderer``), back-projected to the world
frame, cropped to :func:`default_crop` (table top, floor, the table's rim walls and the
robot's pedestal removed; objects, gripper and the arm below z = 0.65 kept), then farthest
point sampling from index 0 (:mod:`mp1.runtime.pointcloud`). Goal markers (MuJoCo sites, e.g.
reach's target) are rendered and so appear in the cloud, as in DP3's mujoco-py renders; for
reach, push and pick-place they are the only visual cue of the randomised goal.

Camera: DP3 moved ``corner2`` to ``[0.75, 0.075, 0.7]`` (metaworld 3 ships that pose as
``corner4``). Its stock orientation renders upside down and looks at the far-left corner of
the table, so it is re-aimed from the same position at :data:`CAMERA_TARGET`, level with the
world's z axis (:data:`CAMERA_POS`, :data:`CAMERA_QUAT`). This only changes which pixels see
what; the cloud is in the world frame either way.

Agent state (9-d, as DP3): hand position (``get_endeff_pos``, 3), then the right and left
finger-tip sites ``rightEndEffector`` / ``leftEndEffector`` (3 + 3), which carry the gripper
opening. Metaworld's raw 39-d observation (what the scripted experts read, and what DP3's
demo files store as ``data/full_state``) is ``info["full_state"]`` and :attr:`full_state`.

Seeding. Metaworld ignores ``reset(seed=...)``; the goal-observable classes draw one layout
from the *global* numpy generator at construction and then freeze it. Here a fresh layout
vector is drawn at every reset (``_freeze_rand_vec = False``, ``seeded_rand_vec = True``)
from the wrapper's gymnasium ``np_random``, seeded with ``seed`` at construction and again by
``reset(seed=s)``. So episode ``k`` of ``MetaWorldEnv(task, seed=s)`` is the ``k``-th draw of
a generator seeded with ``s``: reproducible bit for bit (same machine and library versions),
different for different seeds, independent of what was done during earlier episodes, and
never touching the global numpy state. ``env.reset(seed=s)`` gives the same layout as the
first reset of a fresh ``MetaWorldEnv(task, seed=s)``.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
from metaworld.policies import ENV_POLICY_MAP

from mp1.envs import unknown_name
from mp1.envs.base import PointCloudEnv, look_at_quat

#: All 50 Meta-World v3 task names, without the ``-v3`` suffix.
TASKS: tuple[str, ...] = tuple(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS)

#: The 34 tasks of the MP1 / DP3 benchmark, by DP3's difficulty groups.
BENCHMARK_TASKS: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press", "button-press-wall", "dial-turn", "door-close", "door-open",
        "door-unlock", "drawer-close", "faucet-close", "faucet-open", "handle-press",
        "handle-pull", "lever-pull", "peg-unplug-side", "plate-slide", "plate-slide-back",
        "plate-slide-back-side", "plate-slide-side", "reach", "reach-wall", "window-close",
        "window-open",
    ),
    "medium": ("coffee-pull", "hammer", "peg-insert-side", "soccer"),
    "hard": ("assembly", "hand-insert", "pick-place", "push"),
    "very_hard": ("disassemble", "pick-place-wall", "shelf-place", "stick-pull", "stick-push"),
}  # fmt: skip

#: Camera position (world frame), DP3's placement of ``corner2``.
CAMERA_POS: tuple[float, float, float] = (0.75, 0.075, 0.7)
#: World point the camera is aimed at: the middle of the table's working area.
CAMERA_TARGET: tuple[float, float, float] = (0.0, 0.6, 0.0)

#: Workspace box (world frame, metres) for tasks on the standard table, whose top is at z = 0
#: and whose rim walls stand at x = +-0.68..0.70 and y = 0.20..0.22 / 0.98..1.00, up to
#: z = 0.12; the robot's pedestal is at y < 0.2. z >= 5 mm drops the table top with margin;
#: z <= 0.65 keeps the tallest object (shelf, 0.59) and the raised gripper but trims the
#: upper arm.
DEFAULT_CROP_LOW: tuple[float, float, float] = (-0.65, 0.25, 0.005)
DEFAULT_CROP_HIGH: tuple[float, float, float] = (0.65, 0.975, 0.65)

#: Tasks whose table top is not at z = 0 (a raised table with a hole in it).
TABLE_HEIGHT: dict[str, float] = {"hand-insert": 0.05, "sweep-into": 0.05}


def default_crop(task: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The workspace box ``(low, high)`` for ``task``: the default, raised to its table top."""
    x, y, z = DEFAULT_CROP_LOW
    return (x, y, z + TABLE_HEIGHT.get(canonical_task(task), 0.0)), DEFAULT_CROP_HIGH


#: Camera orientation (w, x, y, z quaternion, camera-to-world), from :func:`look_at_quat`.
CAMERA_QUAT: npt.NDArray[np.float64] = look_at_quat(CAMERA_POS, CAMERA_TARGET)


def canonical_task(task: str) -> str:
    name = task.removesuffix("-v3")
    if name not in TASKS:
        raise unknown_name("Meta-World task", task, TASKS)
    return name


class MetaWorldEnv(PointCloudEnv):
    """One Meta-World v3 task with point-cloud observations and a scripted expert.

    Args:
        task: task name, with or without ``-v3`` (see :data:`TASKS`).
        seed: seeds the layout generator (see the module docstring).
        num_points: points per cloud after farthest point sampling.
        image_size: side of the square depth (and colour) image.
        camera: model camera to render from. ``"corner2"`` is moved to :data:`CAMERA_POS`
            / :data:`CAMERA_QUAT`; any other camera is used as the model defines it.
        crop_low, crop_high: workspace box in the world frame; default
            :func:`default_crop` of the task.
        use_rgb: append colour in [0, 1] to each point (N, 6).
        render_images: also return ``"rgb"`` (H, W, 3) uint8 and ``"depth"`` (H, W) float32
            metric z-depth.
        render_depth: also return ``"depth"`` alone, without the colour frame's rendering: what
            a depth camera gives a stand-in robot (``benchmarks/standin_robot.py``).
        max_episode_steps: truncation limit; default metaworld's ``max_path_length`` (500).
            (DP3 evaluated Meta-World with 200.)
        cloud_pipeline: a recorded ``CloudPipeline`` (as a dict) whose ``CloudMaker`` makes the
            clouds instead of the exact pipeline: a policy trained on a recording sees its own.
    """

    def __init__(
        self,
        task: str,
        seed: int = 0,
        num_points: int = 512,
        image_size: int = 128,
        camera: str = "corner2",
        crop_low: tuple[float, float, float] | None = None,
        crop_high: tuple[float, float, float] | None = None,
        use_rgb: bool = False,
        render_images: bool = False,
        render_depth: bool = False,
        max_episode_steps: int | None = None,
        cloud_pipeline: dict | None = None,
    ) -> None:
        task = canonical_task(task)
        # Passing the seed makes metaworld's constructor restore the global numpy state.
        inner = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-v3-goal-observable"](seed=seed)
        inner._freeze_rand_vec = False
        inner.seeded_rand_vec = True
        max_episode_steps = max_episode_steps or inner.max_path_length
        # metaworld refuses to step past max_path_length; keep its limit equal to ours.
        inner.max_path_length = max_episode_steps
        if camera == "corner2":
            inner.model.cam_pos[inner.model.camera(camera).id] = CAMERA_POS
            inner.model.cam_quat[inner.model.camera(camera).id] = CAMERA_QUAT
        task_low, task_high = default_crop(task)
        crop_box = (task_low if crop_low is None else crop_low, task_high if crop_high is None else crop_high)
        super().__init__(
            inner, task, seed, num_points, image_size, camera, crop_box, 9, use_rgb, render_images, max_episode_steps,
            cloud_pipeline, render_depth,
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._policy = ENV_POLICY_MAP[f"{task}-v3"]()

    def expert_action(self) -> npt.NDArray[np.float32]:
        """The task's scripted ``metaworld.policies`` action for the current state.

        Clipped to the action space; the environment clips the same way, so stepping with the
        clipped action is identical, and demonstrations stay in [-1, 1].
        """
        with warnings.catch_warnings():
            # metaworld warns whenever a policy's raw output leaves [-1, 1]; clipping is intended.
            warnings.filterwarnings("ignore", "Constant\\(s\\) may be too high", UserWarning)
            action = self._policy.get_action(self.full_state)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def agent_pos(self) -> npt.NDArray[np.float32]:
        data = self._env.data
        return np.concatenate(
            [self._env.get_endeff_pos(), data.site("rightEndEffector").xpos, data.site("leftEndEffector").xpos]
        ).astype(np.float32)
