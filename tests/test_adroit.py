"""AdroitEnv and the DAPG expert importer: safe conversion, cloud geometry, seeding, experts."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mp1.envs.adroit import (
    DEFAULT_CROP,
    TASKS,
    AdroitEnv,
    episode_success,
)
from mp1.envs.adroit_experts import (
    EXPERT_TASKS,
    PACKAGED_EXPERTS,
    ExpertFileError,
    expert_cache_dir,
    import_experts,
    read_dapg_pickle,
)
from mp1.evaluate import DP3_EPISODE_STEPS

# The original DAPG pickles (Apache-2.0, tests/data/dapg_raw/README.md); the package ships our
# conversion of them.
RAW = Path(__file__).resolve().parent / "data" / "dapg_raw"


# What each task's cloud must show: (kind, name) of a model body or site on or near a surface.
OBJECTS = {
    "door": [("site", "S_handle")],
    "hammer": [("body", "Object"), ("site", "S_target")],  # hammer handle, nail head
    "pen": [("body", "Object"), ("body", "target")],  # the pen, the goal pen
}
# agent_pos = DP3's hand qpos slice, which sits in the raw observation at these indices.
HAND_IN_FULL_STATE = {"door": slice(3, 27), "hammer": slice(2, 26), "pen": slice(0, 24)}


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("experts")
    import_experts(RAW, dest)
    return dest


@pytest.fixture
def make_env(env_closer) -> Callable[..., AdroitEnv]:
    return lambda task="door", seed=0, **kwargs: env_closer(AdroitEnv(task, seed=seed, **kwargs))


class _Reduce:
    """Pickles as ``func(*args)``: how a hostile file makes unpickling call something."""

    def __init__(self, func: Callable, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# --------------------------------------------------------------------------------------------
# Importer
# --------------------------------------------------------------------------------------------


def test_import_reproduces_reference_arrays(expert_dir: Path) -> None:
    manifest = json.loads((expert_dir / "manifest.json").read_text())
    for task in EXPERT_TASKS:
        ours = np.load(expert_dir / f"dapg_{task}_policy.npz", allow_pickle=False)
        reference = np.load(PACKAGED_EXPERTS / f"dapg_{task}_policy.npz", allow_pickle=False)
        assert sorted(ours.files) == sorted(reference.files)
        for key in reference.files:
            assert ours[key].dtype == reference[key].dtype, key
            np.testing.assert_array_equal(ours[key], reference[key], err_msg=f"{task} {key}")
        entry = manifest["experts"][task]
        raw = RAW / f"{task}-v0_policy.pickle"
        assert entry["source_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
        assert entry["hand_dapg_release"] and entry["file"] == f"dapg_{task}_policy.npz"
    assert "mjrl" not in sys.modules


def test_import_from_hand_dapg_clone_layout(tmp_path: Path) -> None:
    policies = tmp_path / "hand_dapg" / "dapg" / "policies"
    policies.mkdir(parents=True)
    shutil.copy(RAW / "pen-v0_policy.pickle", policies / "pen-v0.pickle")
    (policies / "relocate-v0.pickle").write_bytes(b"not ours")  # other tasks are ignored
    dest = tmp_path / "experts"
    assert import_experts(tmp_path / "hand_dapg", dest) == {"pen": dest / "dapg_pen_policy.npz"}
    assert sorted(p.name for p in dest.iterdir()) == ["dapg_pen_policy.npz", "manifest.json"]


def test_truncated_pickle_is_rejected_and_nothing_written(tmp_path: Path) -> None:
    data = (RAW / "hammer-v0_policy.pickle").read_bytes()
    for cut in (1, 200, len(data) // 2, len(data) - 3):
        (tmp_path / "hammer-v0.pickle").write_bytes(data[:cut])
        with pytest.raises(ExpertFileError, match="hammer-v0.pickle"):
            read_dapg_pickle(tmp_path / "hammer-v0.pickle")
    shutil.copy(RAW / "door-v0_policy.pickle", tmp_path / "door-v0.pickle")
    with pytest.raises(ExpertFileError):
        import_experts(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # the good door policy is not half-imported either


def _hostile_payloads(marker: Path) -> dict[str, bytes]:
    system = _Reduce(os.system, (f"touch {marker}",))
    return {
        "os.system": pickle.dumps(system),
        "print": pickle.dumps(_Reduce(print, ("PWNED",))),
        # inside an allowed name: a "tensor storage" whose bytes are another hostile pickle
        "nested storage": pickle.dumps(
            _Reduce(torch.storage._load_from_bytes, (pickle.dumps(system),))
        ),
        # allowed names used for something else
        "getattr": b"cbuiltins\ngetattr\n(ctorch._C\n_VariableFunctions\nVsystem\ntR.",
        "getattr on a class": b"cbuiltins\ngetattr\n(ccollections\nOrderedDict\nVfromkeys\ntR.",
        "object array": pickle.dumps(np.array([system], dtype=object)),
    }


def test_hostile_pickles_are_rejected_without_running(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    for name, payload in _hostile_payloads(marker).items():
        path = tmp_path / "door-v0.pickle"
        path.write_bytes(payload)
        with pytest.raises(ExpertFileError):
            read_dapg_pickle(path)
        assert not marker.exists(), name
    assert "PWNED" not in capfd.readouterr().out


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"W0": np.zeros((2, 2)), "b0": np.zeros(2)}),  # plain data, wrong structure
        pickle.dumps(torch.nn.Linear(2, 2)),  # a torch module, not an mjrl policy
        pickle.dumps(collections.Counter("ab")),  # a name outside the allow-list
        b"\x00\x01garbage",
        b"",
    ],
    ids=["dict", "torch-module", "counter", "garbage", "empty"],
)
def test_foreign_files_are_rejected(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "door-v0.pickle"
    path.write_bytes(payload)
    with pytest.raises(ExpertFileError):
        read_dapg_pickle(path)


def test_expert_lookup_prefers_an_import_over_the_packaged_copy(
    make_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MP1_HOME", raising=False)
    assert expert_cache_dir() == Path.home() / ".cache" / "mp1" / "experts"
    monkeypatch.setenv("MP1_HOME", str(tmp_path))
    assert expert_cache_dir() == tmp_path / "experts"
    # Nothing imported: the copy that ships with mp1, which works right after install.
    env = make_env("door", num_points=64, image_size=32)
    assert env.expert_path == PACKAGED_EXPERTS / "dapg_door_policy.npz"
    env.reset()
    assert env.expert_action().shape == (28,)
    # An import (re-derived from hand_dapg) takes precedence.
    import_experts(RAW, tmp_path / "experts")
    assert make_env("door", num_points=64, image_size=32).expert_path == tmp_path / "experts" / "dapg_door_policy.npz"


def test_missing_expert_file_says_how_to_import(make_env, tmp_path: Path) -> None:
    env = make_env("door", num_points=64, image_size=32, expert=tmp_path)
    env.reset()
    with pytest.raises(FileNotFoundError, match="mp1 adroit import-experts"):
        env.expert_action()


def test_expert_of_another_task_is_rejected(make_env, expert_dir: Path) -> None:
    env = make_env("door", num_points=64, image_size=32, expert=expert_dir / "dapg_pen_policy.npz")
    env.reset()
    with pytest.raises(ExpertFileError, match="45->24"):
        env.expert_action()


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="door, hammer, pen"):
        AdroitEnv("relocate")


def test_observation_layout(make_env) -> None:
    env = make_env(
        "pen", num_points=256, image_size=64, use_rgb=True, render_images=True, max_episode_steps=2
    )
    obs, info = env.reset()
    assert obs["point_cloud"].shape == (256, 6) and obs["point_cloud"].dtype == np.float32
    assert obs["agent_pos"].shape == (24,) and obs["agent_pos"].dtype == np.float32
    assert obs["rgb"].shape == (64, 64, 3) and obs["depth"].shape == (64, 64)
    assert info["full_state"].shape == (45,) and info["success"] is False
    assert env.observation_space.contains(obs)
    action = np.zeros(env.action_space.shape, np.float32)
    _, _, terminated, truncated, info = env.step(action)
    assert isinstance(info["success"], bool) and not terminated and not truncated
    np.testing.assert_array_equal(info["full_state"], env.full_state)
    assert env.step(action)[3]  # truncated at max_episode_steps


@pytest.mark.parametrize("task", TASKS)
def test_cloud_geometry(make_env, task: str) -> None:
    """Over a few layouts: the cloud lies in the crop box without the table top, and shows
    the hand and the task's objects; agent_pos is DP3's hand-joint slice of qpos."""
    env = make_env(task)
    # gymnasium-robotics' registered horizon is the evaluation's episode length (docs/adroit.md)
    assert env.max_episode_steps == DP3_EPISODE_STEPS
    low, high = DEFAULT_CROP[task]
    data = env._env.data
    for _ in range(3):
        obs, info = env.reset()
        cloud = obs["point_cloud"]
        assert cloud.shape == (512, 3)
        assert np.all(cloud >= low) and np.all(cloud <= high) and cloud[:, 2].min() >= 0.005
        assert len(np.unique(cloud, axis=0)) == 512  # enough surface in view: no padding

        def gap(point: np.ndarray) -> float:
            return float(np.linalg.norm(cloud - point, axis=1).min())

        assert gap(data.body("palm").xpos) < 0.03
        for kind, name in OBJECTS[task]:
            point = data.site(name).xpos if kind == "site" else data.body(name).xpos
            assert gap(point) < 0.04, name
        np.testing.assert_array_equal(
            obs["agent_pos"], info["full_state"][HAND_IN_FULL_STATE[task]].astype(np.float32)
        )


@pytest.mark.parametrize("task", TASKS)
def test_seed_determinism(make_env, task: str) -> None:
    def first_observations(env: AdroitEnv, **reset_kwargs) -> list[dict[str, np.ndarray]]:
        """Initial observations of 3 successive episodes, then 2 steps into the last."""
        frames = [env.reset(**reset_kwargs)[0] for _ in range(3)]
        action = np.full(env.action_space.shape, 0.3, np.float32)
        return frames + [env.step(action)[0] for _ in range(2)]

    kwargs = dict(num_points=128, image_size=48)
    a = first_observations(make_env(task, seed=7, **kwargs))
    b = first_observations(make_env(task, seed=7, **kwargs))
    for frame_a, frame_b in zip(a, b, strict=True):
        for key in frame_a:
            np.testing.assert_array_equal(frame_a[key], frame_b[key], err_msg=key)
    assert not np.array_equal(a[0]["point_cloud"], a[1]["point_cloud"])  # a new layout per reset

    other = make_env(task, seed=8, **kwargs)
    _, info8 = other.reset()
    obs7, info7 = other.reset(seed=7)  # re-seeding reproduces seed 7's first layout
    np.testing.assert_array_equal(obs7["point_cloud"], a[0]["point_cloud"])
    assert not np.array_equal(info8["full_state"], info7["full_state"])
    plain = gym.make(f"AdroitHand{task.capitalize()}-v1").unwrapped
    np.testing.assert_array_equal(info7["full_state"], plain.reset(seed=7)[0])  # its own seeding
    plain.close()


@pytest.mark.parametrize("task", ["door", "hammer"])
def test_expert_solves_seeded_episodes(make_env, expert_dir: Path, task: str) -> None:
    env = make_env(task, seed=0, expert=expert_dir)
    for _ in range(2):
        env.reset()
        flags, truncated = [], False
        while not truncated:
            obs, _, _, truncated, info = env.step(env.expert_action())
            flags.append(info["success"])
        assert len(flags) == 200 and episode_success(flags), sum(flags)
        palm = env._env.data.body("palm").xpos
        assert np.linalg.norm(obs["point_cloud"] - palm, axis=1).min() < 0.03
