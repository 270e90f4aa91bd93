import numpy as np
import pytest
import torch
import zarr

from mp1.data import DeviceBatches, PointCloudDataset, StoreError, load_store, write_store

LENGTHS = (5, 3, 7)


def make_episodes(lengths=LENGTHS, num_points=16, seed=0):
    """Episodes whose every value encodes (episode, step), so windows can be checked exactly."""
    rng = np.random.default_rng(seed)
    episodes = []
    for e, length in enumerate(lengths):
        step_code = (100 * e + np.arange(length)).astype(np.float32)
        episodes.append(
            {
                "point_cloud": step_code[:, None, None] + rng.random((length, num_points, 3), dtype=np.float32) * 0.01,
                "state": np.repeat(step_code[:, None], 9, axis=1),
                "action": np.repeat(step_code[:, None], 4, axis=1),
                "full_state": np.repeat(step_code[:, None], 39, axis=1),
            }
        )
    return episodes


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "demos.zarr"
    write_store(path, make_episodes(), attrs={"task": "toy"})
    return path


def write_raw(path, arrays, episode_ends, zarr_format=2):
    """A store written the way DP3's scripts write it (zarr format 2), bypassing our checks."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    data = root.require_group("data")
    for key, value in arrays.items():
        data.create_array(key, data=value)
    root.require_group("meta").create_array("episode_ends", data=np.asarray(episode_ends))


def test_round_trip_and_attrs(store_path):
    store = load_store(store_path, keys=("point_cloud", "state", "action", "full_state"))
    assert store.episode_ends.tolist() == [5, 8, 15]
    assert store.attrs["task"] == "toy"
    assert store.arrays["full_state"].shape == (15, 39)
    assert not list(store_path.parent.glob(".*tmp"))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_reads_both_zarr_formats_and_ignores_extra_keys(tmp_path, zarr_format):
    episodes = make_episodes()
    arrays = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
    arrays["img"] = np.zeros((15, 8, 8, 3), dtype=np.uint8)
    write_raw(tmp_path / "s.zarr", arrays, [5, 8, 15], zarr_format)
    dataset = PointCloudDataset(tmp_path / "s.zarr")
    assert len(dataset) > 0


def test_windows_and_padding(store_path):
    dataset = PointCloudDataset(store_path, horizon=4, n_obs_steps=2, n_action_steps=3)
    # Per episode of length L: starts from -1 to L - 4 + 2, i.e. L windows.
    assert len(dataset) == sum(LENGTHS)
    codes = [item["action"][:, 0].tolist() for item in dataset]
    assert codes[0] == [0, 0, 1, 2]  # first window: the first step repeated before the episode
    assert codes[4] == [3, 4, 4, 4]  # last window of episode 0: its last step repeated after it
    assert codes[5] == [100, 100, 101, 102]  # episode 1 starts afresh: no mixing
    for item, code in zip(dataset, codes):
        assert len({int(c) // 100 for c in code}) == 1  # one episode per window
        assert item["obs"]["agent_pos"][:, 0].tolist() == code[:2]
        assert item["obs"]["point_cloud"].shape == (2, 16, 3)
        assert item["obs"]["point_cloud"][:, 0, 0].floor().tolist() == code[:2]
        assert item["action"].dtype == torch.float32


def test_device_batches_are_the_datasets_windows(store_path):
    dataset = PointCloudDataset(store_path, horizon=4, n_obs_steps=2, n_action_steps=3)
    batches = DeviceBatches(dataset, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(batches) == -(-len(dataset) // 4)
    epochs = [list(batches) for _ in range(2)]
    assert [len(b["action"]) for b in epochs[0]] == [4] * (len(dataset) // 4) + [len(dataset) % 4] * (len(dataset) % 4 > 0)
    windows = {tuple(dataset[i]["action"][:, 0].tolist()): dataset[i] for i in range(len(dataset))}
    seen = []
    for batch in epochs[0]:
        for i, action in enumerate(batch["action"]):
            expected = windows[tuple(action[:, 0].tolist())]  # each window's actions encode its steps
            torch.testing.assert_close(batch["obs"]["point_cloud"][i], expected["obs"]["point_cloud"])
            torch.testing.assert_close(batch["obs"]["agent_pos"][i], expected["obs"]["agent_pos"])
            seen.append(tuple(action[:, 0].tolist()))
    assert sorted(seen) == sorted(windows)  # every window once per pass
    second = [tuple(a[:, 0].tolist()) for b in epochs[1] for a in b["action"]]
    assert second != seen  # a fresh order each pass ...
    again = DeviceBatches(dataset, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert all(torch.equal(a["action"], b["action"]) for a, b in zip(list(again), epochs[0]))  # ... fixed by the seed


def test_split_and_episode_cap(store_path):
    train = PointCloudDataset(store_path, val_episodes=1, seed=0)
    val = PointCloudDataset(store_path, split="val", val_episodes=1, seed=0)
    assert len(val.episodes) == 1 and not set(train.episodes) & set(val.episodes)
    assert sorted(train.episodes + val.episodes) == [0, 1, 2]
    capped = PointCloudDataset(store_path, max_episodes=1)
    assert capped.episodes == [0] and len(capped) == LENGTHS[0]
    assert PointCloudDataset(store_path, max_episodes=2).episodes[:1] == capped.episodes  # nested few-shot sets
    with pytest.raises(ValueError, match="val_episodes=3 must be at least 0 and leave a training episode: the store holds 3"):
        PointCloudDataset(store_path, val_episodes=3)


def test_normalizer_maps_training_data_to_unit_range(store_path):
    dataset = PointCloudDataset(store_path, max_episodes=2)
    normalizer = dataset.get_normalizer()
    actions = torch.from_numpy(dataset.action[dataset.steps()])
    normalized = normalizer.normalize("action", actions)
    assert normalized.min().item() == pytest.approx(-1) and normalized.max().item() == pytest.approx(1)
    torch.testing.assert_close(normalizer.unnormalize("action", normalized), actions)


def good_arrays():
    episodes = make_episodes()
    return {k: np.concatenate([e[k] for e in episodes]) for k in ("point_cloud", "state", "action")}


@pytest.mark.parametrize(
    "mutate, ends, message",
    [
        (lambda a: a.pop("action"), [5, 8, 15], "missing key 'data/action'"),
        (lambda a: None, [5, 8, 14], "ends at 14 but the arrays hold 15"),
        (lambda a: None, [5, 5, 15], "strictly increasing"),
        (lambda a: None, [8, 5, 15], "strictly increasing"),
        (lambda a: a.update(state=a["state"][:-1]), [5, 8, 15], "mismatched lengths"),
        (lambda a: a["action"].__setitem__((9, 2), np.nan), [5, 8, 15], r"'data/action' contains NaN or inf \(first at step 9\)"),
        (lambda a: a["point_cloud"].__setitem__((3, 0, 0), np.inf), [5, 8, 15], "'data/point_cloud' contains NaN or inf"),
        (lambda a: a.update(point_cloud=a["point_cloud"][..., :2].copy()), [5, 8, 15], "expected \\(T, N, 3 or 6\\)"),
    ],
)
def test_malformed_stores_name_the_problem(tmp_path, mutate, ends, message):
    arrays = good_arrays()
    mutate(arrays)
    write_raw(tmp_path / "bad.zarr", arrays, ends)
    with pytest.raises(StoreError, match=message):
        PointCloudDataset(tmp_path / "bad.zarr")


def test_missing_store_and_non_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_store(tmp_path / "nowhere.zarr")
    (tmp_path / "junk.zarr").write_text("not a store")
    with pytest.raises(StoreError):
        load_store(tmp_path / "junk.zarr")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(StoreError, match="missing group 'data/'"):
        load_store(tmp_path / "empty.zarr")
