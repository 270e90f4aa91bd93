"""Expert demonstrations: roll out a task's scripted expert, keep the successful episodes,
write them as one DP3-layout store per task.

Episodes are drawn from an environment seeded with `seed` (episode k is the k-th layout of
that generator, see `mp1.envs`), so the same seed gives the same demos bit for bit. An
episode counts as successful once the environment reports success on
`env.success_min_steps` steps (Meta-World: 1, Adroit: 25); it is then recorded for
`steps_after_success` more steps (a policy needs little of what follows), or until the step
limit.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np
from mp1.data.store import load_store, write_store
from mp1.envs import make_env
from mp1.progress import progress_bar


class DemoGenerationError(RuntimeError):
    """The expert could not produce the wanted number of successful episodes."""


@dataclass
class DemoConfig:
    episodes: int = 10
    seed: int = 0
    num_points: int = 512
    use_rgb: bool = False
    save_images: bool = False
    steps_after_success: int = 10
    # Give up on a task after this many tries per wanted episode.
    max_attempts_per_episode: int = 5
    env_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoResult:
    env_name: str
    path: str
    kept: int
    attempts: int
    steps: int
    skipped: bool = False


def default_store_path(root: str | os.PathLike, env_name: str, config: DemoConfig) -> Path:
    return Path(root) / f"{env_name.replace('/', '_')}_seed{config.seed}_{config.episodes}ep.zarr"


def record_episode(env, config: DemoConfig) -> tuple[dict[str, np.ndarray], bool]:
    """One expert episode as time-major arrays, and whether it succeeded."""
    obs, info = env.reset()
    steps: list[dict[str, np.ndarray]] = []
    successes, since_success = 0, None
    while True:
        action = env.expert_action()
        step = {"point_cloud": obs["point_cloud"], "state": obs["agent_pos"], "action": action, "full_state": info["full_state"]}
        if config.save_images:
            step |= {"img": obs["rgb"], "depth": obs["depth"]}
        steps.append(step)
        obs, _, terminated, truncated, info = env.step(action)
        successes += bool(info["success"])
        if since_success is None and successes >= env.success_min_steps:
            since_success = 0
        elif since_success is not None:
            since_success += 1
        if terminated or truncated or (since_success is not None and since_success >= config.steps_after_success):
            break
    episode = {key: np.stack([s[key] for s in steps]) for key in steps[0]}
    for key in ("point_cloud", "state", "action", "full_state"):
        episode[key] = episode[key].astype(np.float32)
    return episode, successes >= env.success_min_steps


def generate_task_demos(
    env_name: str, path: str | os.PathLike, config: DemoConfig, progress: Callable[[int], None] | None = None
) -> DemoResult:
    """Generates `config.episodes` successful demos of one task and writes them to `path`."""
    env = make_env(
        env_name, seed=config.seed, num_points=config.num_points, use_rgb=config.use_rgb,
        render_images=config.save_images, **config.env_kwargs,
    )
    try:
        kept, kept_indices, attempts = [], [], 0
        while len(kept) < config.episodes:
            if attempts >= config.max_attempts_per_episode * config.episodes:
                raise DemoGenerationError(
                    f"{env_name}: only {len(kept)} of {attempts} expert episodes succeeded; "
                    f"wanted {config.episodes}"
                )
            episode, success = record_episode(env, config)
            if success:
                kept.append(episode)
                kept_indices.append(attempts)
                if progress:
                    progress(1)
            attempts += 1
        attrs = {
            "env": env_name,
            "task": env.task,
            "seed": config.seed,
            "episode_indices": kept_indices,
            "attempts": attempts,
            "demo_config": asdict(config),
            "observation": observation_attrs(env),
            "success_min_steps": env.success_min_steps,
            "versions": package_versions(SUITE_PACKAGES[env_name.partition("/")[0]]),
        }
        write_store(path, kept, attrs)
        return DemoResult(env_name, str(path), len(kept), attempts, int(sum(len(e["action"]) for e in kept)))
    finally:
        env.close()


# What a store records the versions of: the shared stack and the suite's own simulator package.
SUITE_PACKAGES = {
    "metaworld": ("mp1", "mujoco", "metaworld", "gymnasium", "numpy", "zarr"),
    "adroit": ("mp1", "mujoco", "gymnasium-robotics", "gymnasium", "numpy", "zarr"),
}


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    return {package: version(package) for package in packages}


def observation_attrs(env) -> dict[str, Any]:
    """What a reader needs to reproduce the observations: camera, crop box, point count."""
    attrs = {"num_points": env.num_points, "image_size": env.image_size, "camera": env.camera}
    attrs["crop_low"] = [float(v) for v in env.crop_low]
    attrs["crop_high"] = [float(v) for v in env.crop_high]
    attrs["max_episode_steps"] = int(env.max_episode_steps)
    return attrs


def check_existing_store(path: Path, env_name: str, config: DemoConfig) -> None:
    """An existing store is only reused if it was made for the same task with the same settings."""
    attrs = load_store(path).attrs
    if attrs.get("env") != env_name or attrs.get("demo_config") != asdict(config):
        raise ValueError(
            f"{path} exists but was made for {attrs.get('env')!r} with {attrs.get('demo_config')}; "
            f"wanted {env_name!r} with {asdict(config)}: delete it or choose another path"
        )


def _worker(env_name: str, path: str, config: DemoConfig, queue) -> DemoResult:
    return generate_task_demos(env_name, path, config, progress=queue.put)


def generate_demos(
    env_names: list[str], out_dir: str | os.PathLike, config: DemoConfig, jobs: int = 1,
    paths: dict[str, Path] | None = None,
) -> list[DemoResult]:
    """Generates demos for several tasks, `jobs` processes at a time, skipping tasks whose
    store already exists (stores appear only when complete, so a store is never partial)."""
    paths = paths or {name: default_store_path(out_dir, name, config) for name in env_names}
    for name, path in paths.items():
        if path.exists():
            check_existing_store(path, name, config)
    results = [DemoResult(n, str(p), config.episodes, 0, 0, skipped=True) for n, p in paths.items() if p.exists()]
    todo = [name for name, path in paths.items() if not path.exists()]
    with progress_bar(total=len(todo) * config.episodes, unit="demo", desc="expert demos") as bar:
        if jobs <= 1 or len(todo) <= 1:
            for name in todo:
                bar.set_postfix_str(name)
                results.append(generate_task_demos(name, paths[name], config, progress=bar.update))
            return results
        # Rendering contexts do not survive fork: start workers fresh.
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            queue = manager.Queue()
            pending = {pool.submit(_worker, name, str(paths[name]), config, queue): name for name in todo}
            while pending:
                done, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
                while not queue.empty():
                    bar.update(queue.get())
                for future in done:
                    name = pending.pop(future)
                    results.append(future.result())
                    bar.set_postfix_str(f"done {name}")
    return results
