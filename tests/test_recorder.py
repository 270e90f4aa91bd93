"""Recording a robot's own demonstrations: one committed episode at a time, a killed writer loses
only the episode in progress, appending resumes, depth frames become clouds through the
pipeline the store records."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import zarr

from mp1.data import load_store
from mp1.data.recorder import EpisodeRecorder
from mp1.data.store import StoreError
from mp1.lock import FolderLockedError
from mp1.runtime import Camera, CloudPipeline

STATE, ACTION, POINTS = 7, 7, 32


def episode(seed: int, length: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"state": rng.random(STATE), "action": rng.random(ACTION), "point_cloud": rng.random((POINTS, 3))}
            for _ in range(length)]


def record(recorder: EpisodeRecorder, steps: list[dict]) -> int:
    for step in steps:
        recorder.record(step["state"], step["action"], point_cloud=step["point_cloud"])
    return recorder.end_episode()


def test_episodes_are_committed_one_at_a_time_in_dp3_layout(tmp_path):
    path = tmp_path / "robot.zarr"
    episodes = [episode(0, 5), episode(1, 3), episode(2, 4)]
    with EpisodeRecorder(path, attrs={"robot": "arm"}) as recorder:
        assert [record(recorder, steps) for steps in episodes] == [1, 2, 3]
        recorder.record(np.zeros(STATE), np.zeros(ACTION), point_cloud=np.zeros((POINTS, 3)))  # not ended: dropped
    store = load_store(path)
    assert store.episode_ends.tolist() == [5, 8, 12] and store.attrs["robot"] == "arm" and "env" not in store.attrs
    expected = np.concatenate([[step["state"] for step in steps] for steps in episodes]).astype(np.float32)
    np.testing.assert_array_equal(store.arrays["state"], expected)
    assert zarr.open_group(str(path), mode="r")["meta"]["episode_ends"][:].tolist() == [5, 8, 12]  # DP3's readers


def test_a_killed_writer_loses_only_the_episode_in_progress_and_appending_resumes(tmp_path):
    path = tmp_path / "robot.zarr"
    script = f"""
import os, numpy as np
from mp1.data.recorder import EpisodeRecorder
recorder = EpisodeRecorder({str(path)!r})
rng = np.random.default_rng(0)
for length in (4, 6):
    for _ in range(length):
        recorder.record(rng.random({STATE}), rng.random({ACTION}), point_cloud=rng.random(({POINTS}, 3)))
    recorder.end_episode()
for _ in range(3):
    recorder.record(rng.random({STATE}), rng.random({ACTION}), point_cloud=rng.random(({POINTS}, 3)))
os._exit(1)  # killed mid-episode, without closing anything
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 1
    assert load_store(path).episode_ends.tolist() == [4, 10]
    with EpisodeRecorder(path) as recorder:  # the lock of the dead writer is taken over
        assert recorder.num_episodes == 2 and record(recorder, episode(5, 2)) == 3
    assert load_store(path).episode_ends.tolist() == [4, 10, 12]


def test_steps_written_past_the_last_commit_are_ignored_and_trimmed(tmp_path):
    """A writer killed between appending an episode's steps and committing it leaves them behind."""
    path = tmp_path / "robot.zarr"
    with EpisodeRecorder(path) as recorder:
        record(recorder, episode(0, 4))
    state = zarr.open_group(str(path), mode="r+")["data"]["state"]
    state.resize((7, STATE))
    state[4:] = 9.0
    assert load_store(path).episode_ends.tolist() == [4] and len(load_store(path).arrays["state"]) == 4
    with EpisodeRecorder(path) as recorder:
        record(recorder, episode(1, 2))
    store = load_store(path)
    assert store.episode_ends.tolist() == [4, 6] and not (store.arrays["state"] == 9.0).any()


def test_bad_steps_and_stores_are_refused(tmp_path):
    path = tmp_path / "robot.zarr"
    with EpisodeRecorder(path) as recorder:
        with pytest.raises(ValueError, match="no steps recorded"):
            recorder.end_episode()
        with pytest.raises(ValueError, match="'state' contains NaN"):
            recorder.record(np.full(STATE, np.nan), np.zeros(ACTION), point_cloud=np.zeros((POINTS, 3)))
        recorder.record(np.zeros(STATE), np.zeros(ACTION), point_cloud=np.zeros((POINTS, 3)))
        with pytest.raises(ValueError, match=r"'action' has shape \(3,\); earlier steps of this episode had \(7,\)"):
            recorder.record(np.zeros(STATE), np.zeros(3), point_cloud=np.zeros((POINTS, 3)))
        with pytest.raises(ValueError, match="no cloud pipeline: pass point_cloud="):
            recorder.record(np.zeros(STATE), np.zeros(ACTION), depth=np.zeros((4, 4)))
        with pytest.raises(FolderLockedError, match="robot.zarr is in use by PID"):
            EpisodeRecorder(path)  # one writer per store
        recorder.end_episode()
    with pytest.raises(StoreError, match="no episode committed yet"):
        EpisodeRecorder(tmp_path / "empty.zarr").close()
        load_store(tmp_path / "empty.zarr")


def plane_camera(name: str = "front") -> Camera:
    """Looks straight down (OpenCV axes) from 1 m above the base frame's origin."""
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = np.diag([1.0, -1.0, -1.0])  # camera z (forward) along -z of the base
    extrinsics[2, 3] = 1.0
    return Camera(name, 32, 24, [[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]], extrinsics)


def test_depth_frames_become_clouds_through_the_recorded_pipeline(tmp_path):
    pipeline = CloudPipeline((plane_camera(),), crop_low=(-1, -1, -0.1), crop_high=(1, 1, 0.5), num_points=64)
    path = tmp_path / "depth.zarr"
    with EpisodeRecorder(path, pipeline) as recorder:
        for _ in range(3):
            recorder.record(np.zeros(STATE), np.zeros(ACTION), depth=[np.full((24, 32), 1000, np.uint16)])  # mm
        recorder.end_episode()
        with pytest.raises(ValueError, match="makes clouds from depth frames"):
            recorder.record(np.zeros(STATE), np.zeros(ACTION), point_cloud=np.zeros((POINTS, 3)))
    store = load_store(path)
    cloud = store.arrays["point_cloud"]
    assert cloud.shape == (3, 64, 3) and np.abs(cloud[..., 2]).max() < 1e-4  # the table plane z = 0
    assert CloudPipeline.from_dict(store.attrs["observation"]["pipeline"]) == pipeline
    other = CloudPipeline((plane_camera("wrist"),), crop_low=(-1, -1, -0.1), crop_high=(1, 1, 0.5), num_points=64)
    with pytest.raises(StoreError, match=r"another cloud pipeline \(differs in cameras\)"):
        EpisodeRecorder(path, other)
    with pytest.raises(StoreError, match=r"differs in version \(store 2, given 1\)"):
        EpisodeRecorder(path, dataclasses.replace(pipeline, version=1))


def test_a_store_recorded_before_pipeline_versions_takes_version_1(tmp_path):
    """A pipeline dict without a version was written by version 1: appending to it needs that
    version, and the clouds stay made the way its earlier episodes were."""
    pipeline = CloudPipeline((plane_camera(),), crop_low=(-1, -1, -0.1), crop_high=(1, 1, 0.5), num_points=64)
    path = tmp_path / "depth.zarr"
    with EpisodeRecorder(path, pipeline) as recorder:
        recorder.record(np.zeros(STATE), np.zeros(ACTION), depth=[np.full((24, 32), 1000, np.uint16)])
        recorder.end_episode()
    root = zarr.open_group(str(path), mode="r+")
    observation = dict(root.attrs["observation"])
    observation["pipeline"] = {key: value for key, value in observation["pipeline"].items() if key != "version"}
    root.attrs["observation"] = observation
    with pytest.raises(StoreError, match=r"differs in version \(store 1, given 2\)"):
        EpisodeRecorder(path, pipeline)
    with EpisodeRecorder(path, dataclasses.replace(pipeline, version=1)) as recorder:
        recorder.record(np.zeros(STATE), np.zeros(ACTION), depth=[np.full((24, 32), 1000, np.uint16)])
        recorder.end_episode()
    assert load_store(path).arrays["point_cloud"].shape[0] == 2


def test_viz_draws_a_recorded_store_with_its_crop_box(tmp_path):
    from mp1.viz import plot_episode_clouds

    pipeline = CloudPipeline((plane_camera(),), crop_low=(-1, -1, -0.1), crop_high=(1, 1, 0.5), num_points=64)
    with EpisodeRecorder(tmp_path / "depth.zarr", pipeline) as recorder:
        for height in (900, 800):
            depth = np.full((24, 32), 1000, np.uint16)
            depth[8:16, 10:20] = height  # a box on the table
            recorder.record(np.zeros(STATE), np.zeros(ACTION), depth=depth)
        recorder.end_episode()
    out = plot_episode_clouds(tmp_path / "depth.zarr", tmp_path / "clouds.png")
    assert out.stat().st_size > 10_000


def test_a_recorded_store_tells_the_simulator_to_make_clouds_its_way(tmp_path):
    """Evaluating a policy trained on a recording in a simulator: the env gets the pipeline."""
    from mp1.evaluate import observation_settings

    pipeline = CloudPipeline((plane_camera(),), crop_low=(-1, -1, -0.1), crop_high=(1, 1, 0.5), num_points=64)
    with EpisodeRecorder(tmp_path / "depth.zarr", pipeline) as recorder:
        recorder.record(np.zeros(STATE), np.zeros(ACTION), depth=np.full((24, 32), 1000, np.uint16))
        recorder.end_episode()
    store = load_store(tmp_path / "depth.zarr")
    settings = observation_settings(store.attrs, store.arrays["point_cloud"].shape)
    assert settings["cloud_pipeline"] == pipeline.to_dict() and settings["num_points"] == 64
    assert settings["crop_low"] == (-1, -1, -0.1)
