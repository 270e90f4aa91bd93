import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """pytest-xdist runs two workers on two cores; one thread each avoids oversubscription."""
    torch.set_num_threads(1)


@pytest.fixture
def env_closer():
    """Registers environments to close at teardown (frees their GL contexts); returns each env."""
    envs = []
    yield lambda env: envs.append(env) or env
    for env in envs:
        env.close()
