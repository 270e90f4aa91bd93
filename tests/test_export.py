"""ONNX export of the one-step policies, checked against torch with onnxruntime."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mp1.export import export_onnx, max_difference, onnx_session
from mp1.policies import make_policy
from mp1.runtime import LinearNormalizer

SMALL = {"unet": {"down_dims": [16, 32, 64], "time_embed_dim": 16}, "encoder": {"point_hidden_dims": [16, 32]}}


def small_policy(name):
    policy = make_policy(name, **SMALL)
    dims = {"point_cloud": 3, "agent_pos": 9, "action": 4}
    rng = np.random.default_rng(0)
    policy.set_normalizer(LinearNormalizer(dims).fit({k: rng.normal(size=(64, d)) * 3 for k, d in dims.items()}))
    return policy.eval()


@pytest.mark.parametrize("name", ["mp1-tuned", "flowpolicy"])
def test_onnx_graph_matches_torch(tmp_path, name):
    policy = small_policy(name)
    session = onnx_session(export_onnx(policy, tmp_path / "policy.onnx", num_points=128))
    assert [i.name for i in session.get_inputs()] == ["point_cloud", "agent_pos", "noise"]
    assert max_difference(policy, session, num_points=128) <= 1e-4
    metadata = session.get_modelmeta().custom_metadata_map  # everything a runner needs, in the file
    assert metadata["policy"] == name and metadata["execute_steps"] == "1:4" and metadata["num_points"] == "128"
    assert (metadata["state_dim"], metadata["action_dim"], metadata["noise_scale"]) == ("9", "4", "1.0")
    assert json.loads(metadata["contract"]) == {"state_dim": 9, "point_dim": 3, "n_obs_steps": 2, "num_points": None,
                                                "pipeline": None}


def test_dp3_stays_torch_only(tmp_path):
    with pytest.raises(ValueError, match="DDIM loop"):
        export_onnx(small_policy("dp3"), tmp_path / "dp3.onnx")


def test_export_command(tmp_path):
    small_policy("mp1").save(tmp_path / "policy.pt")
    result = subprocess.run(
        [sys.executable, "-m", "mp1", "export", str(tmp_path / "policy.pt"), "--onnx", str(tmp_path / "out.onnx"),
         "--num-points", "64"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max |onnxruntime - torch|" in result.stdout and (tmp_path / "out.onnx").stat().st_size > 10_000


def test_onnx_backend_gives_the_torch_policys_actions(tmp_path):
    """OnnxPolicy behind a PolicyRunner and behind mp1 serve's request handler: the same actions
    as torch for the same seed, and torch's errors for bad observations."""
    from mp1.export import OnnxPolicy
    from mp1.runtime import PolicyRunner
    from mp1.serving.server import PolicyServer
    from mp1.serving.wire import pack

    policy = small_policy("mp1-tuned")
    onnx_policy = OnnxPolicy(policy, num_points=64)
    rng = np.random.default_rng(5)
    steps = [{"point_cloud": rng.normal(size=(64, 3)).astype(np.float32) * 3, "agent_pos": rng.normal(size=9).astype(np.float32)}
             for _ in range(6)]
    torch_runner, onnx_runner = PolicyRunner(policy, seed=4), PolicyRunner(onnx_policy, seed=4)
    for obs in steps:
        np.testing.assert_allclose(onnx_runner.act(obs), torch_runner.act(obs), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="'obs.agent_pos' must be finite floats"):  # the runner's contract
        onnx_runner.act({**steps[0], "agent_pos": np.full(9, np.nan, np.float32)})

    policy.save(tmp_path / "policy.pt", extra={"observation": {"num_points": 64}})
    server = PolicyServer(tmp_path / "policy.pt", backend="onnx")
    assert server.metadata["backend"] == "onnx"
    runner = PolicyRunner(server.policy, seed=4)
    server.on_main_thread = lambda job: job()  # no serving thread here: run the policy call in place
    reply = server.respond(runner, pack({"type": "act", "obs": steps[0]}))
    np.testing.assert_allclose(reply["action"], PolicyRunner(policy, seed=4).act(steps[0]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="unknown backend"):
        PolicyServer(tmp_path / "policy.pt", backend="tensorrt")
