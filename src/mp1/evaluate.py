"""Rollouts: a stateful runner that a robot loop (or a simulator) calls once per control step,
and success-rate evaluation with confidence intervals and latency.

Episode i of an evaluation with seed s is `env.reset(seed=s + i)`: the same layouts whatever
the number of worker processes, and disjoint from the demonstrations (drawn from generator
seed 0 by default; evaluation seeds start at 1000).
"""

from __future__ import annotations

import concurrent.futures as futures
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mp1 import jsonio
from mp1.envs import make_env
from mp1.policies import Policy
from mp1.progress import progress_bar
from mp1.runtime import PolicyRunner

# DP3's Meta-World episode length; also the registered horizon of all three Adroit v1 tasks
# (docs/adroit.md), so one length serves both suites.
DP3_EPISODE_STEPS = 200


@dataclass
class EvalResult:
    env_name: str
    episodes: int
    seed: int
    successes: list[bool]
    episode_lengths: list[int]
    latency_p50_ms: float
    latency_p99_ms: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes))

    @property
    def confidence_interval(self) -> tuple[float, float]:
        return wilson_interval(sum(self.successes), len(self.successes))

    def summary(self) -> dict[str, Any]:
        low, high = self.confidence_interval
        return {
            "env": self.env_name, "episodes": self.episodes, "seed": self.seed,
            "success_rate": self.success_rate, "ci95_low": low, "ci95_high": high,
            "latency_p50_ms": self.latency_p50_ms, "latency_p99_ms": self.latency_p99_ms, "device": self.device,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Summary and per-episode results as JSON."""
        per_episode = [
            {"episode": i, "env_seed": self.seed + i, "success": s, "length": n}
            for i, (s, n) in enumerate(zip(self.successes, self.episode_lengths))
        ]
        jsonio.write(path, {**self.summary(), **self.extra, "per_episode": per_episode}, indent=1)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval: sensible at 0% and 100%, unlike the normal approximation."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_episodes(
    policy: Policy, env_name: str, env_seeds: list[int], video_path: str | None = None, progress=None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[list[bool], list[int], list[float]]:
    """Runs one episode per env seed until it counts as solved (`env.success_min_steps` steps
    with success) or reaches the step limit."""
    env = make_env(env_name, seed=env_seeds[0] if env_seeds else 0, **(env_kwargs or {}))
    runner = PolicyRunner(policy)
    successes, lengths, frames = [], [], []
    try:
        for index, env_seed in enumerate(env_seeds):
            obs, _ = env.reset(seed=env_seed)
            runner.reset(seed=env_seed)
            successful_steps, steps = 0, 0
            while successful_steps < env.success_min_steps:
                if video_path and index == 0:
                    frames.append(env.render())
                obs, _, terminated, truncated, info = env.step(runner.act(obs))
                successful_steps, steps = successful_steps + bool(info["success"]), steps + 1
                if terminated or truncated:
                    break
            successes.append(successful_steps >= env.success_min_steps)
            lengths.append(steps)
            if progress:
                progress(1)
    finally:
        env.close()
    if video_path and frames:
        import imageio.v3 as iio

        Path(video_path).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(video_path, np.stack(frames), fps=20)
    return successes, lengths, runner.latencies_ms


def _worker(
    policy_path: str, env_name: str, env_seeds: list[int], threads: int, queue, video_path: str | None,
    env_kwargs: dict[str, Any], sampling: dict[str, Any],
) -> tuple:
    torch.set_num_threads(threads)
    policy = Policy.load(policy_path).set_sampling(**sampling)
    return run_episodes(policy, env_name, env_seeds, video_path, queue.put, env_kwargs)


def evaluate(
    policy: Policy | str | os.PathLike, env_name: str, episodes: int = 100, seed: int = 1000, jobs: int = 1,
    video_path: str | None = None, max_episode_steps: int | None = DP3_EPISODE_STEPS, show_progress: bool = True,
    observation: dict[str, Any] | None = None, sampling: dict[str, Any] | None = None,
) -> EvalResult:
    """Success rate of a policy (object, or policy file for `jobs > 1`) over seeded episodes.
    `observation` holds the environment settings the training data was recorded with (point
    count, colour, crop box; see `observation_settings`), so that the policy sees the same.
    `sampling` overrides a policy file's inference knobs (`noise_scale`, `steps`; see
    `Policy.set_sampling`); an in-memory policy is evaluated as it is set."""
    sampling = sampling or {}
    if sampling and isinstance(policy, Policy):
        raise ValueError("sampling overrides a policy file's knobs; set an in-memory policy's with policy.set_sampling()")
    env_kwargs = dict(observation or {})
    if max_episode_steps:
        env_kwargs["max_episode_steps"] = max_episode_steps
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    seeds = [seed + i for i in range(episodes)]
    with progress_bar(total=episodes, unit="episode", desc=f"eval {env_name}", disable=not show_progress, leave=False) as bar:
        if jobs <= 1:
            loaded = policy if isinstance(policy, Policy) else Policy.load(policy).set_sampling(**sampling)
            successes, lengths, latencies = run_episodes(loaded, env_name, seeds, video_path, bar.update, env_kwargs)
            device = str(loaded.device)
        else:
            if isinstance(policy, Policy):
                raise ValueError("parallel evaluation needs a policy file, not an in-memory policy")
            shards = [seeds[i::jobs] for i in range(jobs) if seeds[i::jobs]]
            context = multiprocessing.get_context("spawn")
            with context.Manager() as manager, futures.ProcessPoolExecutor(len(shards), mp_context=context) as pool:
                queue = manager.Queue()
                threads = max(1, torch.get_num_threads() // len(shards))
                pending = [
                    pool.submit(
                        _worker, str(policy), env_name, shard, threads, queue, video_path if i == 0 else None, env_kwargs,
                        sampling,
                    )
                    for i, shard in enumerate(shards)
                ]
                running = set(pending)
                while running:
                    _, running = futures.wait(running, timeout=0.5, return_when=futures.FIRST_COMPLETED)
                    while not queue.empty():
                        bar.update(queue.get())
                parts = [f.result() for f in pending]
            by_seed = {}
            for shard, (s, n, _) in zip(shards, parts):
                by_seed.update({env_seed: (ok, length) for env_seed, ok, length in zip(shard, s, n)})
            successes = [by_seed[s][0] for s in seeds]
            lengths = [by_seed[s][1] for s in seeds]
            latencies = [ms for part in parts for ms in part[2]]
            device = f"cpu ({len(shards)} processes, {threads} threads each)"
    return EvalResult(
        env_name, episodes, seed, successes, lengths,
        float(np.median(latencies)), float(np.percentile(latencies, 99)), device,
    )


def observation_settings(store_attrs: dict[str, Any], point_cloud_shape: tuple[int, ...]) -> dict[str, Any]:
    """Environment settings that reproduce a store's observations: point count and colour from
    the data itself (so stores made by DP3's scripts work too), the crop box when recorded."""
    settings: dict[str, Any] = {"num_points": int(point_cloud_shape[1]), "use_rgb": point_cloud_shape[2] == 6}
    recorded = store_attrs.get("observation", {})
    for key in ("crop_low", "crop_high"):
        if key in recorded:
            settings[key] = tuple(recorded[key])
    if recorded.get("pipeline"):  # a recording's clouds: the simulator makes its own the same way
        settings["cloud_pipeline"] = recorded["pipeline"]
    return settings


DP3_TOP_EVALUATIONS = 5


def dp3_protocol(periodic_success_rates: list[float], top: int = DP3_TOP_EVALUATIONS) -> float:
    """DP3's reported number: the mean of the `top` best periodic evaluations (optimistic:
    it picks the best checkpoints after the fact)."""
    if not periodic_success_rates:
        return float("nan")
    return float(np.mean(sorted(periodic_success_rates, reverse=True)[:top]))


def dp3_protocol_label(evaluations: int, top: int = DP3_TOP_EVALUATIONS) -> str:
    """What `dp3_protocol` averaged, e.g. "mean of the 5 best of 15 periodic evaluations"."""
    if evaluations <= top:
        return f"mean of all {evaluations} periodic evaluation{'s' if evaluations != 1 else ''} (DP3 takes the {top} best)"
    return f"mean of the {top} best of {evaluations} periodic evaluations"
