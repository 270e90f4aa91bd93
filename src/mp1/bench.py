"""Benchmarks (not tests): `predict_action` latency at batch 1 beside one raw network forward,
and the cost of one training step per objective.

Latency follows DESIGN.md's protocol: the full `predict_action` (validation, normalisation,
encoder, sampler, unnormalisation), after warm-up, with device synchronisation, many calls,
median and p99, on a named device.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from mp1.policies import LinearNormalizer, Policy, make_policy

LATENCY_POLICIES = ("mp1", "flowpolicy", "dp3")
TRAINING_OBJECTIVES = ("mp1", "flowmatching", "flowpolicy", "dp3")


@dataclass
class LatencyResult:
    policy: str
    preset: str
    p50_ms: float
    p99_ms: float
    forward_p50_ms: float
    nfe: int


@dataclass
class TrainStepResult:
    policy: str
    preset: str
    batch: int
    ms_per_step: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def timed_ms(fn: Callable[[], object], device: torch.device, calls: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return np.asarray(times)


def random_obs(policy: Policy, batch: int, num_points: int, device: torch.device) -> dict[str, torch.Tensor]:
    c = policy.config
    return {
        "point_cloud": torch.rand(batch, c.n_obs_steps, num_points, c.point_dim, device=device),
        "agent_pos": torch.rand(batch, c.n_obs_steps, c.state_dim, device=device),
    }


def benchmark_policy(name: str, preset: str, device: torch.device) -> Policy:
    """A freshly initialised policy with a normaliser fitted on uniform data (timing only)."""
    torch.manual_seed(0)
    policy = make_policy(name, preset=preset)
    c = policy.config
    dims = {"point_cloud": c.point_dim, "agent_pos": c.state_dim, "action": c.action_dim}
    policy.set_normalizer(LinearNormalizer(dims).fit({key: np.random.rand(64, dim) for key, dim in dims.items()}))
    return policy.to(device)


def measure_latency(
    name: str, preset: str, device: torch.device, calls: int, warmup: int, num_points: int = 512
) -> LatencyResult:
    policy = benchmark_policy(name, preset, device).eval()
    obs = random_obs(policy, 1, num_points, device)
    steps = policy.objective.sample_steps

    def forward():
        with torch.inference_mode():
            cond = policy.encode(obs)
            z = torch.randn(1, policy.config.horizon, policy.config.action_dim, device=device)
            t = torch.ones(1, device=device)
            policy.unet(z, t, t, cond)

    full = timed_ms(lambda: policy.predict_action(obs), device, calls, warmup)
    raw = timed_ms(forward, device, calls, warmup)
    return LatencyResult(
        name, preset, float(np.median(full)), float(np.percentile(full, 99)), float(np.median(raw)), steps
    )


def measure_train_step(
    name: str, preset: str, device: torch.device, batch: int, steps: int, warmup: int = 2, num_points: int = 512
) -> TrainStepResult:
    policy = benchmark_policy(name, preset, device).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    data = {
        "obs": random_obs(policy, batch, num_points, device),
        "action": torch.rand(batch, policy.config.horizon, policy.config.action_dim, device=device) * 2 - 1,
    }

    def step():
        loss, _ = policy.compute_loss(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return TrainStepResult(name, preset, batch, float(np.median(timed_ms(step, device, steps, warmup))))


def latency_report(
    preset: str, device_name: str, calls: int, warmup: int, train_batch: int, train_steps: int
) -> dict:
    device = resolve_device(device_name)
    latency = [measure_latency(name, preset, device, calls, warmup) for name in LATENCY_POLICIES]
    training = (
        [measure_train_step(name, preset, device, train_batch, train_steps) for name in TRAINING_OBJECTIVES]
        if train_steps > 0
        else []
    )
    return {
        "device": describe_device(device),
        "results": [asdict(r) for r in latency],
        "training": [asdict(r) for r in training],
    }


def format_report(report: dict) -> str:
    lines = [f"device: {report['device']}", "", "policy      preset  nfe  p50_ms  p99_ms  forward_p50_ms  p50/forward"]
    for r in report["results"]:
        lines.append(
            f"{r['policy']:<11} {r['preset']:<7} {r['nfe']:>3} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['forward_p50_ms']:>15.2f} {r['p50_ms'] / r['forward_p50_ms']:>12.2f}"
        )
    by_name = {r["policy"]: r for r in report["results"]}
    if {"mp1", "dp3"} <= by_name.keys():
        lines.append(f"\nDP3 / MP1 latency: {by_name['dp3']['p50_ms'] / by_name['mp1']['p50_ms']:.1f}x")
    if report["training"]:
        lines += ["", "training step     batch  ms/step"]
        for r in report["training"]:
            lines.append(f"{r['policy']:<17} {r['batch']:>5} {r['ms_per_step']:>8.1f}")
        steps = {r["policy"]: r["ms_per_step"] for r in report["training"]}
        if {"mp1", "flowmatching"} <= steps.keys():
            lines.append(f"\nMeanFlow (MP1) step / flow-matching step: {steps['mp1'] / steps['flowmatching']:.2f}x")
    return "\n".join(lines)
