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
point sampling from index 0 (:mod:`mp1.envs.pointcloud`). Goal markers (MuJoCo sites, e.g.
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
from typing import Any, SupportsFloat

import gymnasium as gym
import mujoco
import numpy as np
import numpy.typing as npt
from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
from metaworld.policies import ENV_POLICY_MAP

from mp1.envs.pointcloud import crop, depth_to_points, farthest_point_sample, mujoco_camera

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


def _look_at_quat(
    pos: tuple[float, float, float], target: tuple[float, float, float]
) -> npt.NDArray[np.float64]:
    """MuJoCo camera quaternion looking from ``pos`` at ``target`` with world +z up."""
    forward = np.subtract(target, pos, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    # MuJoCo / OpenGL camera frame: x right, y up, looking along -z.
    rot = np.stack([right, up, -forward], axis=1)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


#: Camera orientation (w, x, y, z quaternion, camera-to-world), from :func:`_look_at_quat`.
CAMERA_QUAT: npt.NDArray[np.float64] = _look_at_quat(CAMERA_POS, CAMERA_TARGET)


def canonical_task(task: str) -> str:
    name = task.removesuffix("-v3")
    if name not in TASKS:
        raise ValueError(f"unknown Meta-World task {task!r}; valid tasks: {', '.join(TASKS)}")
    return name


class MetaWorldEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
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
        max_episode_steps: truncation limit; default metaworld's ``max_path_length`` (500).
            (DP3 evaluated Meta-World with 200.)
    """

    metadata = {"render_modes": ["rgb_array"]}

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
        max_episode_steps: int | None = None,
    ) -> None:
        self.task = canonical_task(task)
        self.layout_seed = seed
        self.num_points = num_points
        self.image_size = image_size
        self.camera = camera
        task_low, task_high = default_crop(self.task)
        self.crop_low = np.asarray(task_low if crop_low is None else crop_low, np.float32)
        self.crop_high = np.asarray(task_high if crop_high is None else crop_high, np.float32)
        self.use_rgb = use_rgb
        self.render_images = render_images
        self.render_mode = "rgb_array"

        # Passing the seed makes metaworld's constructor restore the global numpy state.
        env_cls = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.task}-v3-goal-observable"]
        self._env = env_cls(seed=seed)
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        super().reset(seed=seed)  # seeds self.np_random, which metaworld draws layouts from
        self.max_episode_steps = max_episode_steps or self._env.max_path_length
        # metaworld refuses to step past max_path_length; keep its limit equal to ours.
        self._env.max_path_length = self.max_episode_steps
        self._policy = ENV_POLICY_MAP[f"{self.task}-v3"]()

        model = self._env.model
        mujoco_camera(model, self._env.data, camera)  # fail early on an unknown camera name
        if camera == "corner2":
            model.cam_pos[model.camera(camera).id] = CAMERA_POS
            model.cam_quat[model.camera(camera).id] = CAMERA_QUAT
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        # No multisampling, shadows or reflections: on software GL (llvmpipe) that takes a
        # colour frame from ~190 ms to ~14 ms and a depth frame from 6.7 to 5.5 ms; the depth
        # image, hence the xyz cloud, is bit-identical.
        model.vis.quality.offsamples = 0
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(model, image_size, image_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

        point_low, point_high = self.crop_low, self.crop_high
        if use_rgb:
            point_low = np.concatenate([point_low, np.zeros(3, np.float32)])
            point_high = np.concatenate([point_high, np.ones(3, np.float32)])
        spaces: dict[str, gym.Space] = {
            "point_cloud": gym.spaces.Box(
                np.tile(point_low, (num_points, 1)), np.tile(point_high, (num_points, 1))
            ),
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (9,), np.float32),
        }
        if render_images:
            spaces["rgb"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
            spaces["depth"] = gym.spaces.Box(0, np.inf, (image_size, image_size), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

        self._full_state: npt.NDArray[np.float64] | None = None
        self._steps = 0

    @property
    def full_state(self) -> npt.NDArray[np.float64]:
        """Metaworld's raw 39-d observation at the current step (the experts' input)."""
        if self._full_state is None:
            raise RuntimeError("call reset() first")
        return self._full_state.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start the next episode; ``seed`` re-seeds the layout generator first."""
        super().reset(seed=seed)
        self._env.np_random = self.np_random
        raw, _ = self._env.reset()
        # Derived positions (cam_xpos, geom_xpos) must reflect the moved camera and the final
        # reset state before rendering; metaworld does not guarantee a forward pass last.
        mujoco.mj_forward(self._env.model, self._env.data)
        self._full_state = raw
        self._steps = 0
        return self._observe(), {"success": False, "full_state": raw.copy()}

    def step(
        self, action: npt.ArrayLike
    ) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        """Advance one control step. Never terminates; truncates at ``max_episode_steps``.

        ``info["success"]`` is metaworld's per-step success flag (a bool); an episode counts as
        solved if it was true at any step, as in DP3.
        """
        if self._full_state is None:
            raise RuntimeError("call reset() first")
        raw, reward, _, _, mw_info = self._env.step(np.asarray(action, dtype=np.float64))
        self._full_state = raw
        self._steps += 1
        info = {**mw_info, "success": bool(mw_info["success"]), "full_state": raw.copy()}
        truncated = self._steps >= self.max_episode_steps
        return self._observe(), float(reward), False, truncated, info

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

    def render(self) -> npt.NDArray[np.uint8]:
        """Colour image from the observation camera, (H, W, 3) uint8."""
        renderer = self._live_renderer()
        renderer.update_scene(self._env.data, self.camera)
        return renderer.render()

    def close(self) -> None:
        """Release the GL context of the renderer and metaworld's own resources."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def _live_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            raise RuntimeError("environment is closed")
        return self._renderer

    def _agent_pos(self) -> npt.NDArray[np.float32]:
        data = self._env.data
        return np.concatenate(
            [
                self._env.get_endeff_pos(),
                data.site("rightEndEffector").xpos,
                data.site("leftEndEffector").xpos,
            ]
        ).astype(np.float32)

    def _observe(self) -> dict[str, np.ndarray]:
        model, data = self._env.model, self._env.data
        renderer = self._live_renderer()
        renderer.update_scene(data, self.camera)
        rgb = renderer.render() if (self.use_rgb or self.render_images) else None
        renderer.enable_depth_rendering()
        try:
            depth = renderer.render()
        finally:
            renderer.disable_depth_rendering()

        cam_pos, cam_rot, fovy = mujoco_camera(model, data, self.camera)
        points = depth_to_points(
            depth, cam_pos, cam_rot, fovy_deg=fovy, rgb=rgb if self.use_rgb else None
        )
        points = crop(points, self.crop_low, self.crop_high)
        obs = {
            "point_cloud": farthest_point_sample(points, self.num_points),
            "agent_pos": self._agent_pos(),
        }
        if self.render_images:
            assert rgb is not None
            obs["rgb"] = rgb
            obs["depth"] = depth
        return obs
