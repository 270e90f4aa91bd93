"""Reliability: one writer per folder, leftovers of killed writers, integrity checks."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from mp1.data.store import load_store, write_store
from mp1.lock import FolderLock, FolderLockedError


def test_second_writer_is_refused_with_the_holders_pid(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(FolderLockedError, match=f"PID {os.getpid()} on host"):
            FolderLock(tmp_path / "run").acquire()
    FolderLock(tmp_path / "run").acquire().release()  # free again once released


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = f"from mp1.lock import FolderLock; FolderLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FolderLockedError, match=f"PID {holder.pid}"):
        FolderLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    FolderLock(tmp_path).acquire().release()


def test_store_write_removes_leftovers_of_killed_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".demos.zarr.{dead.pid}.tmp"
    (leftover / "data").mkdir(parents=True)
    alive = tmp_path / f".demos.zarr.{os.getppid()}.tmp"  # a live writer's folder is left alone
    alive.mkdir()
    episode = {"point_cloud": np.zeros((3, 4, 3), np.float32), "state": np.zeros((3, 2), np.float32),
               "action": np.zeros((3, 2), np.float32)}
    write_store(tmp_path / "demos.zarr", [episode])
    assert not leftover.exists() and alive.exists()
    assert load_store(tmp_path / "demos.zarr").num_episodes == 1


def small_store(path):
    rng = np.random.default_rng(0)
    episodes = [{"point_cloud": rng.normal(size=(150, 8, 3)).astype(np.float32),
                 "state": rng.normal(size=(150, 2)).astype(np.float32),
                 "action": rng.normal(size=(150, 2)).astype(np.float32)} for _ in range(2)]
    write_store(path, episodes, {"env": "metaworld/lever-pull"})
    return path


def chunk_files(store, key):
    return sorted(p for p in (store / "data" / key).rglob("*") if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("damage", ["deleted chunk", "flipped bytes", "truncated chunk"])
def test_damaged_store_is_detected(tmp_path, damage):
    from mp1.data.store import StoreError

    store = small_store(tmp_path / "demos.zarr")
    chunk = chunk_files(store, "point_cloud")[1]
    if damage == "deleted chunk":
        chunk.unlink()
    elif damage == "flipped bytes":
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
    else:
        chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(StoreError, match="point_cloud|unreadable"):
        load_store(store)


def test_store_of_another_task_is_refused(tmp_path):
    from mp1.train import Trainer, parse_overrides

    store = small_store(tmp_path / "demos.zarr")
    with pytest.raises(ValueError, match="holds 'metaworld/lever-pull', not task='metaworld/button-press'"):
        Trainer(parse_overrides([f"data_path={store}", "task=metaworld/button-press", "demos=2", f"run_dir={tmp_path}/run"]))


def test_training_refuses_a_run_folder_in_use(tmp_path):
    from mp1.train import Trainer, parse_overrides

    store = small_store(tmp_path / "demos.zarr")
    trainer = Trainer(parse_overrides([f"data_path={store}", "task=metaworld/lever-pull", "demos=2", f"run_dir={tmp_path}/run"]))
    with FolderLock(tmp_path / "run"):
        with pytest.raises(FolderLockedError, match="in use by PID"):
            trainer.train()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("override, message", [
    ("ema_power=-5", "ema_power must be positive"), ("threads=-1", "threads must be >= 0"),
])
def test_bad_settings_are_refused(override, message):
    from mp1.train import parse_overrides

    with pytest.raises(ValueError, match=message):
        parse_overrides([override])


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    import torch

    from mp1.train import Trainer, parse_overrides

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # CI and the development machine have none
    store = small_store(tmp_path / "demos.zarr")
    with pytest.raises(ValueError, match="sees no CUDA device"):
        Trainer(parse_overrides([f"data_path={store}", "task=metaworld/lever-pull", "demos=2", "device=cuda"]))
