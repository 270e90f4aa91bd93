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
