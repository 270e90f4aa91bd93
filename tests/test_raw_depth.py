"""Raw depth in: a policy trained on a recorded store carries the store's cloud pipeline, and the
runner, the server and the client accept depth frames, making the same clouds as training did."""

import socket
import subprocess
import sys

import numpy as np
import pytest

from mp1.data.recorder import EpisodeRecorder
from mp1.policies.policy import read_policy_file
from mp1.runtime import Camera, CloudMaker, CloudPipeline, PolicyRunner
from mp1.serving import PolicyClient, PolicyServerError
from mp1.train import Trainer, parse_overrides

TINY = [
    "model.unet.down_dims=[16,32,64]", "model.unet.time_embed_dim=16", "model.encoder.point_hidden_dims=[16,32]",
    "batch_size=8", "threads=1", "video=false", "epochs=1", "eval_every=0", "demos=0", "policy=mp1-tuned",
]
STATE = 6


def pipeline() -> CloudPipeline:
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking down from 1 m
    extrinsics[2, 3] = 1.0
    camera = Camera("top", 32, 24, [[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]], extrinsics)
    return CloudPipeline((camera,), crop_low=(-1, -1, -0.1), crop_high=(1, 1, 0.6), num_points=48)


def frame(rng: np.random.Generator) -> np.ndarray:
    """A table at 1 m and a box of random height: uint16 millimetres."""
    depth = np.full((24, 32), 1000, np.uint16)
    depth[8:16, 10:20] = 1000 - rng.integers(100, 400)
    return depth


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("rawdepth")
    rng = np.random.default_rng(0)
    with EpisodeRecorder(root / "robot.zarr", pipeline()) as recorder:
        for _ in range(2):
            for _ in range(6):
                recorder.record(rng.random(STATE), rng.random(STATE), depth=frame(rng))
            recorder.end_episode()
    Trainer(parse_overrides(TINY + [f"data_path={root / 'robot.zarr'}", f"run_dir={root / 'run'}"])).train()
    return root / "run" / "policy_latest.pt"


def test_the_policy_file_carries_the_pipeline_and_the_runner_takes_depth(policy_file):
    assert CloudPipeline.from_dict(read_policy_file(policy_file)["extra"]["pipeline"]) == pipeline()
    rng = np.random.default_rng(1)
    steps = [(frame(rng), rng.random(STATE).astype(np.float32)) for _ in range(4)]
    from_depth, from_cloud = PolicyRunner.from_file(str(policy_file), seed=3), PolicyRunner.from_file(str(policy_file), seed=3)
    maker = CloudMaker(pipeline())
    for depth, state in steps:
        np.testing.assert_array_equal(from_depth.act({"depth": depth, "agent_pos": state}),
                                      from_cloud.act({"point_cloud": maker(depth), "agent_pos": state}))
    with pytest.raises(ValueError, match="no valid depth|all zero"):
        from_depth.act({"depth": np.zeros((24, 32), np.uint16), "agent_pos": steps[0][1]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_takes_depth_frames_as_the_runner_does(policy_file):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mp1", "serve", str(policy_file), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rng = np.random.default_rng(2)
        steps = [(frame(rng), rng.random(STATE).astype(np.float32)) for _ in range(4)]
        runner = PolicyRunner.from_file(str(policy_file), seed=11)
        with PolicyClient(port=port, reconnect_s=120) as client:
            assert client.metadata["pipeline"]["cameras"][0]["name"] == "top"
            client.reset(seed=11)
            for depth, state in steps:
                np.testing.assert_allclose(client.act({"depth": depth, "agent_pos": state}),
                                           runner.act({"depth": depth, "agent_pos": state}), rtol=1e-5, atol=1e-6)
            with pytest.raises(PolicyServerError, match="camera 'top'.*shape"):
                client.act({"depth": np.full((10, 10), 1000, np.uint16), "agent_pos": steps[0][1]})
            assert client.act({"depth": steps[0][0], "agent_pos": steps[0][1]}).shape == (STATE,)  # still serving
    finally:
        process.kill()
        process.wait()
