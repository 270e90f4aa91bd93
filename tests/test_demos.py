"""Demonstration generation and the `mp1 demos` / `mp1 viz` commands, on tiny stores."""

import subprocess
import sys

import numpy as np
import pytest

from mp1.cli import main
from mp1.data import PointCloudDataset, load_store
from mp1.data.demos import DemoConfig, generate_demos, generate_task_demos
from mp1.envs import resolve_env_names

KEYS = ("point_cloud", "state", "action", "full_state")


def test_same_seed_same_demos_bit_for_bit(tmp_path):
    config = DemoConfig(episodes=2, seed=3, steps_after_success=2)
    for name in ("a", "b"):
        generate_task_demos("metaworld/button-press", tmp_path / f"{name}.zarr", config)
    a, b = (load_store(tmp_path / f"{n}.zarr", keys=KEYS) for n in ("a", "b"))
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    for key in KEYS:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)
    assert a.attrs["seed"] == 3 and a.attrs["task"] == "button-press"
    assert a.attrs["observation"]["num_points"] == 512 and len(a.attrs["observation"]["crop_low"]) == 3
    assert a.arrays["point_cloud"].shape[1:] == (512, 3) and a.arrays["state"].shape[1] == 9

    generate_task_demos("metaworld/button-press", tmp_path / "c.zarr", DemoConfig(episodes=1, seed=4, steps_after_success=2))
    c = load_store(tmp_path / "c.zarr", keys=KEYS)
    assert not np.array_equal(c.arrays["full_state"][0], a.arrays["full_state"][0])  # another layout


def test_generate_skips_finished_tasks(tmp_path):
    config = DemoConfig(episodes=1, steps_after_success=1)
    first = generate_demos(["metaworld/reach"], tmp_path, config)
    assert not first[0].skipped and first[0].kept == 1
    again = generate_demos(["metaworld/reach"], tmp_path, config)
    assert again[0].skipped


def test_resolve_env_names():
    assert len(resolve_env_names(["all34"])) == 34
    assert resolve_env_names(["hard", "metaworld/push-v3"]) == [
        "metaworld/assembly", "metaworld/hand-insert", "metaworld/pick-place", "metaworld/push"
    ]
    with pytest.raises(ValueError, match="unknown Meta-World task 'nope'"):
        resolve_env_names(["metaworld/nope"])
    with pytest.raises(ValueError, match="unknown environment or set"):
        resolve_env_names(["mujoco/ant"])


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mp1", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_demos_and_viz(tmp_path):
    out = tmp_path / "demos.zarr"
    result = run_cli("demos", "metaworld/button-press", "--episodes", "2", "--out", str(out), "--images", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kept 2/" in result.stdout
    store = load_store(out, keys=("point_cloud", "state", "action", "img", "depth"))
    assert store.num_episodes == 2 and store.arrays["img"].dtype == np.uint8
    assert len(PointCloudDataset(out)) == store.episode_ends[-1]

    result = run_cli("viz", str(out), "--episode", "1", "--out", str(tmp_path / "clouds.png"), "--video", "gif", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "clouds.png").stat().st_size > 10_000 and (tmp_path / "clouds.gif").exists()

    # The errors in process: `main` ends with SystemExit's one-line message (Python prints it alone).
    for argv, message in [(["demos", "metaworld/buton-press"], "unknown Meta-World task 'buton-press'"),
                          (["viz", str(tmp_path / "missing.zarr")], "no demonstration store")]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert str(exit_.value.code).startswith("mp1: error: ") and message in exit_.value.code


def test_adroit_demo_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MP1_HOME", str(tmp_path / "home"))  # nothing imported: the packaged experts
    generate_task_demos("adroit/door", tmp_path / "door.zarr", DemoConfig(episodes=1, steps_after_success=2))
    store = load_store(tmp_path / "door.zarr", keys=KEYS)
    assert store.attrs["success_min_steps"] == 25 and store.attrs["observation"]["image_size"] == 84
    assert store.arrays["state"].shape[1] == 24 and store.arrays["action"].shape[1] == 28
    assert store.arrays["point_cloud"].shape[1:] == (512, 3)
