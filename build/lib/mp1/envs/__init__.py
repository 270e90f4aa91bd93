"""Simulated tasks with DP3-style point-cloud observations, made by name."""

from __future__ import annotations

import ctypes.util
import difflib
import os
from typing import Any

import gymnasium as gym


def choose_gl_backend() -> str:
    """Headless rendering: EGL when its library is present, else OSMesa. Must run before
    mujoco is imported; an explicit MUJOCO_GL wins."""
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    return os.environ["MUJOCO_GL"]


choose_gl_backend()

SUITES = ("metaworld", "adroit")


class MissingExtraError(ModuleNotFoundError):
    """A suite whose optional dependency is not installed (the message names the pip extra)."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> ValueError:
    """The error for a name not in `valid`, suggesting the closest valid names."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} Valid: {', '.join(valid)}")


def make_env(name: str, seed: int = 0, **kwargs: Any) -> gym.Env:
    """E.g. `make_env("metaworld/button-press", seed=0)` or `make_env("adroit/door", seed=0)`."""
    suite, _, task = name.partition("/")
    if suite == "metaworld" and task:
        from mp1.envs.metaworld import MetaWorldEnv

        return MetaWorldEnv(task, seed=seed, **kwargs)
    if suite == "adroit" and task:
        from mp1.envs.adroit import AdroitEnv

        return AdroitEnv(task, seed=seed, **kwargs)
    raise ValueError(f"unknown environment {name!r}; expected '<suite>/<task>' with suite in {SUITES}")


def task_sets() -> dict[str, list[str]]:
    """Named sets of environments: the benchmark, its difficulty groups, and whole suites."""
    from mp1.envs.adroit import TASKS as ADROIT_TASKS
    from mp1.envs.metaworld import BENCHMARK_TASKS, TASKS

    sets = {group: [f"metaworld/{t}" for t in tasks] for group, tasks in BENCHMARK_TASKS.items()}
    sets["metaworld34"] = [name for group in BENCHMARK_TASKS.values() for name in (f"metaworld/{t}" for t in group)]
    sets["all34"] = sets["metaworld34"]
    sets["metaworld50"] = [f"metaworld/{t}" for t in TASKS]
    sets["adroit3"] = [f"adroit/{t}" for t in ADROIT_TASKS]
    sets["all37"] = sets["adroit3"] + sets["metaworld34"]
    # One task per Meta-World difficulty group (among those DP3 learns well) plus one Adroit task:
    # small enough for all three methods x 2 seeds on a 2-core machine (benchmarks/cpu_suite.sh).
    sets["cpu-suite"] = [
        "metaworld/button-press", "metaworld/coffee-pull", "metaworld/assembly", "metaworld/stick-push", "adroit/hammer"
    ]
    return sets


def resolve_env_names(specs: list[str]) -> list[str]:
    """Expands set names (e.g. "all34", "hard") and checks single names; keeps order, no repeats."""
    sets = task_sets()
    names: list[str] = []
    for spec in specs:
        for name in sets.get(spec, [spec]):
            suite, _, task = name.partition("/")
            if suite not in SUITES or not task:
                raise unknown_name("environment or set", spec, sorted(sets) + [f"{s}/<task>" for s in SUITES])
            if suite == "metaworld":
                from mp1.envs.metaworld import canonical_task

                name = f"metaworld/{canonical_task(task)}"
            elif suite == "adroit":
                from mp1.envs.adroit import TASKS as ADROIT_TASKS

                if task not in ADROIT_TASKS:
                    raise unknown_name("Adroit task", task, ADROIT_TASKS)
            if name not in names:
                names.append(name)
    return names


__all__ = ["SUITES", "MissingExtraError", "make_env", "resolve_env_names", "task_sets", "unknown_name"]
