"""The robot-side packages stay light: mp1.runtime needs no simulator, store or trainer, and the
serving client needs no torch."""

import subprocess
import sys

SIMULATION_AND_TRAINING = ("gymnasium", "mujoco", "metaworld", "zarr", "diffusers", "matplotlib", "mp1.envs", "mp1.train")


def imported_after(code: str) -> set[str]:
    script = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_runtime_loads_and_runs_a_policy_without_simulators(tmp_path):
    from mp1.policies import make_policy
    from mp1.runtime import LinearNormalizer

    policy = make_policy("mp1-tuned", unet={"down_dims": [16, 32, 64]})
    dims = {"point_cloud": 3, "agent_pos": 9, "action": 4}
    import numpy as np

    policy.set_normalizer(LinearNormalizer(dims).fit({k: np.random.default_rng(0).random((32, d)) for k, d in dims.items()}))
    policy.save(tmp_path / "policy.pt")
    modules = imported_after(
        "import numpy as np\n"
        "from mp1.runtime import PolicyRunner, crop, depth_to_points, farthest_point_sample, load_policy\n"
        f"runner = PolicyRunner(load_policy({str(tmp_path / 'policy.pt')!r}))\n"
        "depth = np.full((32, 32), 1.0, np.float32)\n"
        "K = np.array([[30.0, 0, 15.5], [0, 30.0, 15.5], [0, 0, 1]])\n"
        "points = depth_to_points(depth, np.zeros(3), np.eye(3), intrinsics=K, convention='opencv')\n"
        "cloud = farthest_point_sample(crop(points, (-1, -1, 0.5), (1, 1, 1.5)), 64)\n"
        "assert runner.act({'point_cloud': cloud, 'agent_pos': np.zeros(9, np.float32)}).shape == (4,)\n"
    )
    loaded = {m for m in modules if m.startswith(SIMULATION_AND_TRAINING)}
    assert not loaded, loaded


def test_client_needs_no_torch():
    modules = imported_after("from mp1.serving import PolicyClient")
    assert "torch" not in modules and "numpy" in modules and "websockets" in modules


def small_runner(seed: int = 0):
    import numpy as np

    import torch

    from mp1.policies import make_policy
    from mp1.runtime import LinearNormalizer, PolicyRunner

    torch.manual_seed(0)  # the same weights for every runner
    policy = make_policy("mp1-tuned", unet={"down_dims": [16, 32, 64]})
    dims = {"point_cloud": 3, "agent_pos": 9, "action": 4}
    policy.set_normalizer(LinearNormalizer(dims).fit({k: np.random.default_rng(0).random((32, d)) for k, d in dims.items()}))
    return PolicyRunner(policy, seed=seed)


def test_runner_keeps_copies_of_what_a_driver_hands_it():
    """A driver that fills the same buffers every step must not rewrite the runner's history."""
    import numpy as np

    rng = np.random.default_rng(1)
    steps = [{"point_cloud": rng.random((64, 3), dtype=np.float32), "agent_pos": rng.random(9, dtype=np.float32)} for _ in range(2)]
    fresh = small_runner()
    fresh.observe({k: v.copy() for k, v in steps[0].items()})
    fresh.observe({k: v.copy() for k, v in steps[1].items()})
    reused, buffers = small_runner(), {k: np.empty_like(v) for k, v in steps[0].items()}
    for step in steps:
        for key in buffers:
            buffers[key][...] = step[key]
        reused.observe(buffers)
    np.testing.assert_array_equal(reused.predict_chunk(), fresh.predict_chunk())
    assert not np.array_equal(reused.history[0]["agent_pos"], reused.history[1]["agent_pos"])


def test_reset_with_a_seed_replays_an_episode():
    import numpy as np

    obs = {"point_cloud": np.random.default_rng(2).random((64, 3), dtype=np.float32), "agent_pos": np.zeros(9, np.float32)}
    runner = small_runner(seed=0)
    first = [runner.act(obs) for _ in range(4)]
    runner.reset(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, [runner.act(obs) for _ in range(4)]))
    runner.reset()  # no seed: the noise goes on
    assert not np.array_equal(first[0], runner.act(obs))


def test_the_robot_side_installs_ask_for_no_more_than_they_import():
    """`pip install mp1` is the client and `mp1[runtime]` the in-process runtime: their
    requirements must leave out torch (client) and the simulators and training stack (both);
    benchmarks/robot_install.sh installs each into an empty venv."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    names = lambda requirements: {re.split(r"[<>=!~\[ ;]", r)[0].lower() for r in requirements}
    client, runtime = names(project["dependencies"]), names(project["optional-dependencies"]["runtime"])
    assert client == {"numpy", "websockets", "msgpack"}
    assert runtime == {"torch", "fpsample", "omegaconf"}
    assert not (client | runtime) & {"mujoco", "metaworld", "gymnasium", "diffusers", "zarr", "matplotlib"}


def test_one_contract_checks_every_step_and_holds_an_episode_to_its_point_count():
    """The runner and the server check steps with the same function; a policy file that records
    no point count still gets one per episode (a history of mixed counts cannot be stacked)."""
    import numpy as np
    import pytest

    runner = small_runner()
    assert runner.contract.num_points is None and runner.contract.state_dim == 9
    step = lambda points: {"point_cloud": np.random.rand(points, 3).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}
    runner.act(step(64))
    with pytest.raises(ValueError, match=r"'obs.point_cloud' has shape \(32, 3\); expected \(64, 3\)"):
        runner.act(step(32))
    for bad, message in ((dict(step(64), agent_pos=np.zeros(8, np.float32)), r"'obs.agent_pos' has shape \(8,\)"),
                         (dict(step(64), agent_pos=np.full(9, np.nan, np.float32)), "finite floats"),
                         ({"agent_pos": np.zeros(9, np.float32)}, "'obs.point_cloud' is missing"),
                         (dict(step(64), point_cloud=np.zeros((64, 3), np.int32)), "finite floats"),
                         ({"depth": np.zeros((4, 4)), "agent_pos": np.zeros(9, np.float32)}, "records no cloud pipeline")):
        with pytest.raises(ValueError, match=message):
            runner.act(bad)
    assert len(runner.history) == 2 and runner.act(step(64)).shape == (4,)  # nothing bad entered the history
    runner.reset()
    assert runner.act(step(32)).shape == (4,)  # a new episode may start with another count
