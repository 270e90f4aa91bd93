"""MetaWorldEnv: observation geometry, seed reproducibility and the scripted expert."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mp1.envs.metaworld import BENCHMARK_TASKS, TASKS, MetaWorldEnv, default_crop


@pytest.fixture
def make_env(env_closer) -> Callable[..., MetaWorldEnv]:
    return lambda task="button-press", seed=0, **kwargs: env_closer(MetaWorldEnv(task, seed=seed, **kwargs))


def _rollout(env: MetaWorldEnv, steps: int, **reset_kwargs) -> list[dict[str, np.ndarray]]:
    obs, _ = env.reset(**reset_kwargs)
    frames = [obs]
    for _ in range(steps):
        obs, *_ = env.step(env.expert_action())
        frames.append(obs)
    return frames


def _assert_same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    for frame_a, frame_b in zip(a, b, strict=True):
        for key in frame_a:
            np.testing.assert_array_equal(frame_a[key], frame_b[key], err_msg=key)


def test_task_lists() -> None:
    assert len(TASKS) == 50
    sizes = {group: len(tasks) for group, tasks in BENCHMARK_TASKS.items()}
    assert sizes == {"easy": 21, "medium": 4, "hard": 4, "very_hard": 5}
    assert set().union(*BENCHMARK_TASKS.values()) <= set(TASKS)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="button-press-topdown"):
        MetaWorldEnv("button-smash", seed=0)


def test_observation_layout(make_env) -> None:
    env = make_env(
        "button-press-v3", num_points=256, image_size=64, use_rgb=True, render_images=True
    )
    obs, info = env.reset()
    assert obs["point_cloud"].shape == (256, 6) and obs["point_cloud"].dtype == np.float32
    assert 0.0 <= obs["point_cloud"][:, 3:].min() and obs["point_cloud"][:, 3:].max() <= 1.0
    assert obs["agent_pos"].shape == (9,) and obs["agent_pos"].dtype == np.float32
    assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (64, 64) and obs["depth"].dtype == np.float32
    assert info["full_state"].shape == (39,)
    assert env.observation_space.contains(obs)
    _, reward, terminated, truncated, info = env.step(env.expert_action())
    assert isinstance(info["success"], bool) and not terminated and not truncated
    np.testing.assert_array_equal(info["full_state"], env.full_state)


def test_depth_alone_is_the_depth_of_the_images(make_env) -> None:
    """`render_depth` returns the same depth frame as `render_images`, without the colour frame."""
    images = make_env("button-press-v3", num_points=64, image_size=64, render_images=True)
    depth_only = make_env("button-press-v3", num_points=64, image_size=64, render_depth=True)
    expected, obs = images.reset(seed=3)[0], depth_only.reset(seed=3)[0]
    assert "rgb" not in obs and "rgb" not in depth_only.observation_space.spaces
    assert depth_only.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["depth"], expected["depth"])


def test_cloud_geometry_button_press(make_env) -> None:
    env = make_env()
    obs, info = env.reset()
    cloud, agent_pos = obs["point_cloud"], obs["agent_pos"]
    low, high = default_crop("button-press")
    assert cloud[:, 2].min() >= low[2] > 0.0  # the table top (z = 0) is gone
    assert np.all(cloud >= low) and np.all(cloud <= high)
    # The gripper is seen where agent_pos says: both finger tips (agent_pos[3:9]) sit on the
    # cloud; the hand position (agent_pos[:3], metaworld's) is between the fingers, 4-5 cm
    # from the nearest visible surface.
    np.testing.assert_allclose(agent_pos[:3], info["full_state"][:3], atol=1e-6)
    for finger in (agent_pos[3:6], agent_pos[6:9]):
        assert np.linalg.norm(cloud - finger, axis=1).min() < 0.02
    assert np.linalg.norm(cloud - agent_pos[:3], axis=1).min() < 0.06
    # The button box: metaworld's object position (full_state[4:7]) lies in the cloud too.
    assert np.linalg.norm(cloud - info["full_state"][4:7], axis=1).min() < 0.05


def test_raised_table_is_cropped(make_env) -> None:
    """hand-insert's table top is at z = 0.05 (with a hole); its crop starts above it."""
    low, _ = default_crop("hand-insert-v3")
    assert low[2] == pytest.approx(0.055)
    obs, _ = make_env("hand-insert", num_points=128).reset()
    assert obs["point_cloud"][:, 2].min() >= low[2]


def test_same_seed_same_clouds_different_seed_different_layout(make_env) -> None:
    first = _rollout(make_env(seed=3), steps=3)
    second = _rollout(make_env(seed=3), steps=3)
    _assert_same(first, second)
    other, _ = make_env(seed=4).reset()
    assert not np.array_equal(first[0]["point_cloud"], other["point_cloud"])


def test_successive_episodes_reproducible(make_env) -> None:
    """Episode k depends on the seed only, not on what was done in earlier episodes."""
    busy, idle = make_env(seed=5), make_env(seed=5)
    first = _rollout(busy, steps=5)[0]
    _rollout(busy, steps=5)
    for _ in range(3):
        idle_obs, idle_info = idle.reset()
    busy_obs, busy_info = busy.reset()
    _assert_same([busy_obs], [idle_obs])
    np.testing.assert_array_equal(busy_info["full_state"], idle_info["full_state"])
    assert not np.array_equal(first["point_cloud"], busy_obs["point_cloud"])  # a new layout


def test_reset_seed_matches_fresh_env_and_spares_global_rng(make_env) -> None:
    before = np.random.get_state()[1].copy()
    fresh, _ = make_env(seed=7).reset()
    reseeded, _ = make_env(seed=0).reset(seed=7)
    _assert_same([fresh], [reseeded])
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_expert_solves_button_press(make_env) -> None:
    env = make_env(seed=0, num_points=64)
    env.reset()
    for _ in range(env.max_episode_steps):
        _, _, _, truncated, info = env.step(env.expert_action())
        if info["success"] or truncated:
            break
    assert info["success"]


def test_a_recorded_pipeline_makes_the_clouds(make_env) -> None:
    """An env given its own camera as a CloudPipeline makes its clouds with the CloudMaker (what a
    robot's recording used): the same scene, the same box, a close cover of the exact cloud."""
    exact = make_env("button-press", seed=3)
    pipeline = exact.cloud_pipeline()
    fast = make_env("button-press", seed=3, cloud_pipeline=pipeline.to_dict())
    exact_cloud, fast_cloud = exact.reset(seed=3)[0]["point_cloud"], fast.reset(seed=3)[0]["point_cloud"]
    assert fast_cloud.shape == exact_cloud.shape == (512, 3)
    assert (fast_cloud >= exact.crop_low - 1e-5).all() and (fast_cloud <= exact.crop_high + 1e-5).all()
    nearest = np.sqrt(((fast_cloud[:, None] - exact_cloud[None]) ** 2).sum(-1)).min(1)
    assert np.median(nearest) < 0.02  # metres: both cover the same surfaces
    with pytest.raises(ValueError, match="one camera of 64x64 pixels .this env.s., got corner2 128x128"):
        make_env("button-press", seed=3, image_size=64, cloud_pipeline=pipeline.to_dict())
