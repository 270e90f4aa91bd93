"""What every simulated task shares: a MuJoCo env behind DP3-style point-cloud observations.

A subclass builds the inner environment (anything with `model`, `data`, `np_random`,
`reset()`, `step()` and an `info["success"]`), places its camera, and says what the agent
state is and what the expert does. This class renders depth, turns it into a world-frame
point cloud (`mp1.runtime.pointcloud`, or a recorded `CloudPipeline`'s `CloudMaker`: the function
a robot's recording used), seeds layouts from its own generator, counts steps and truncates.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import mujoco
import numpy as np
import numpy.typing as npt

from mp1.runtime.perception import Camera, CloudMaker, CloudPipeline
from mp1.runtime.pointcloud import crop, depth_to_points, farthest_point_sample


class PointCloudEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    metadata = {"render_modes": ["rgb_array"]}
    #: An episode counts as solved once `info["success"]` was set on this many steps.
    success_min_steps: int = 1

    def __init__(
        self,
        inner: Any,
        task: str,
        seed: int,
        num_points: int,
        image_size: int,
        camera: str,
        crop_box: tuple[npt.ArrayLike, npt.ArrayLike],
        state_dim: int,
        use_rgb: bool,
        render_images: bool,
        max_episode_steps: int,
        cloud_pipeline: dict[str, Any] | None = None,
        render_depth: bool = False,
    ) -> None:
        self._env = inner
        self.task = task
        self.num_points = num_points
        self.image_size = image_size
        self.camera = camera
        self.crop_low, self.crop_high = (np.asarray(bound, np.float32) for bound in crop_box)
        self.use_rgb = use_rgb
        self.render_images = render_images
        self.render_depth = render_depth or render_images
        self.render_mode = "rgb_array"
        self.max_episode_steps = max_episode_steps
        # A recorded pipeline (its one camera this env's, at this image size) makes the clouds instead.
        self._cloud_maker = None if cloud_pipeline is None else self._maker(CloudPipeline.from_dict(cloud_pipeline))
        super().reset(seed=seed)  # seeds self.np_random, which the inner env draws layouts from

        model = inner.model
        mujoco_camera(model, inner.data, camera)  # fail early on an unknown camera name
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        # No multisampling, shadows or reflections: on software GL (llvmpipe) that takes a
        # colour frame from ~190 ms to ~14 ms; the depth image, hence the xyz cloud, is
        # bit-identical.
        model.vis.quality.offsamples = 0
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(model, image_size, image_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

        point_low, point_high = self.crop_low, self.crop_high
        if use_rgb:
            point_low = np.concatenate([point_low, np.zeros(3, np.float32)])
            point_high = np.concatenate([point_high, np.ones(3, np.float32)])
        spaces: dict[str, gym.Space] = {
            "point_cloud": gym.spaces.Box(np.tile(point_low, (num_points, 1)), np.tile(point_high, (num_points, 1))),
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
        }
        if render_images:
            spaces["rgb"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        if self.render_depth:
            spaces["depth"] = gym.spaces.Box(0, np.inf, (image_size, image_size), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self._full_state: npt.NDArray[np.float64] | None = None
        self._steps = 0

    # --- what a subclass provides ------------------------------------------------------------

    def agent_pos(self) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def expert_action(self) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    # --- the shared machinery ----------------------------------------------------------------

    @property
    def full_state(self) -> npt.NDArray[np.float64]:
        """The inner env's raw observation at the current step (what the expert reads)."""
        if self._full_state is None:
            raise RuntimeError("call reset() first")
        return self._full_state.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start the next episode; `seed` re-seeds the layout generator first."""
        super().reset(seed=seed)
        self._env.np_random = self.np_random
        raw, _ = self._env.reset()
        # Derived positions (camera, geoms) must reflect the final reset state before rendering.
        mujoco.mj_forward(self._env.model, self._env.data)
        self._full_state = raw
        self._steps = 0
        return self._observe(), {"success": False, "full_state": raw.copy()}

    def step(self, action: npt.ArrayLike) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        """One control step. Never terminates; truncates at `max_episode_steps`."""
        if self._full_state is None:
            raise RuntimeError("call reset() first")
        raw, reward, _, _, inner_info = self._env.step(np.asarray(action, dtype=np.float64))
        self._full_state = raw
        self._steps += 1
        info = {**inner_info, "success": bool(inner_info["success"]), "full_state": raw.copy()}
        return self._observe(), float(reward), False, self._steps >= self.max_episode_steps, info

    def render(self) -> npt.NDArray[np.uint8]:
        """Colour image from the observation camera, (H, W, 3) uint8."""
        renderer = self._live_renderer()
        renderer.update_scene(self._env.data, self.camera)
        return renderer.render()

    def close(self) -> None:
        """Release the renderer's GL context and the inner env's resources."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def _live_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            raise RuntimeError("environment is closed")
        return self._renderer

    def cloud_pipeline(self, num_points: int | None = None) -> CloudPipeline:
        """This env's camera (at its current pose) and crop box as a `CloudPipeline`: what a
        stand-in robot records with, and what `cloud_pipeline=` takes back."""
        mujoco.mj_forward(self._env.model, self._env.data)  # the camera's pose is derived, maybe not yet
        pos, rot, fovy = mujoco_camera(self._env.model, self._env.data, self.camera)
        camera = Camera.from_mujoco(self.camera, self.image_size, self.image_size, fovy, pos, rot)
        return CloudPipeline((camera,), tuple(map(float, self.crop_low)), tuple(map(float, self.crop_high)),
                             num_points or self.num_points, colour=self.use_rgb)

    def _maker(self, pipeline: CloudPipeline) -> CloudMaker:
        camera = pipeline.cameras[0]
        if len(pipeline.cameras) != 1 or (camera.width, camera.height) != (self.image_size, self.image_size):
            raise ValueError(
                f"cloud_pipeline must have one camera of {self.image_size}x{self.image_size} pixels (this env's), got "
                + ", ".join(f"{c.name} {c.width}x{c.height}" for c in pipeline.cameras)
            )
        if (pipeline.num_points, pipeline.colour) != (self.num_points, self.use_rgb):
            raise ValueError(f"cloud_pipeline makes {pipeline.num_points} points (colour {pipeline.colour}); this env "
                             f"{self.num_points} (colour {self.use_rgb})")
        return CloudMaker(pipeline)

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
        if self._cloud_maker is not None:
            cloud = self._cloud_maker(depth, rgb if self.use_rgb else None)
        else:
            cam_pos, cam_rot, fovy = mujoco_camera(model, data, self.camera)
            points = depth_to_points(depth, cam_pos, cam_rot, fovy_deg=fovy, rgb=rgb if self.use_rgb else None)
            cloud = farthest_point_sample(crop(points, self.crop_low, self.crop_high), self.num_points)
        obs = {"point_cloud": cloud, "agent_pos": self.agent_pos()}
        if self.render_images:
            obs["rgb"] = rgb
        if self.render_depth:
            obs["depth"] = depth
        return obs


def mujoco_camera(
    model: mujoco.MjModel, data: mujoco.MjData, camera: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """World pose and vertical field of view of a named MuJoCo camera.

    Reads ``data.cam_xpos`` / ``data.cam_xmat`` (valid after ``mj_forward`` or a step), so
    cameras attached to moving bodies are handled. The rotation is camera-to-world in the
    OpenGL convention (looks along -z, y up).

    Returns:
        ``(cam_pos (3,), cam_rot (3, 3), fovy_deg)``.
    """
    try:
        cam_id = model.camera(camera).id
    except KeyError:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise ValueError(f"no camera named {camera!r}; the model has {names}") from None
    pos = np.array(data.cam_xpos[cam_id], dtype=np.float64)
    rot = np.array(data.cam_xmat[cam_id], dtype=np.float64).reshape(3, 3)
    return pos, rot, float(model.cam_fovy[cam_id])


def look_at_quat(pos: npt.ArrayLike, target: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """MuJoCo camera quaternion (w, x, y, z) looking from ``pos`` at ``target``, world +z up."""
    forward = np.subtract(target, pos, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    # "opengl" convention: x right, y up, looking along -z.
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.stack([right, up, -forward], axis=1).reshape(-1))
    return quat
