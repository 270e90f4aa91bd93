"""Benchmarks (not tests): `predict_action` latency at batch 1 beside one raw network forward
(eagerly and with each requested `Policy.accelerate` mode, in float32 and with bf16 weights), and
the cost of one training step per objective (float32 or under bf16 autocast; the trainer's AdamW).

Latency follows the project's protocol (docs/training.md): the full `predict_action` (validation, normalisation,
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

from mp1.objectives import Diffusion
from mp1.policies import LinearNormalizer, Policy, make_policy

LATENCY_POLICIES = ("mp1", "mp1-tuned", "flowpolicy", "dp3")
TRAINING_OBJECTIVES = ("mp1", "mp1-tuned", "flowmatching", "flowpolicy", "dp3")


@dataclass
class LatencyResult:
    policy: str
    preset: str
    mode: str  # eager, compile or cuda_graph (Policy.accelerate), or onnx (onnxruntime, CPU)
    precision: str  # fp32, or bf16 (the network's weights cast once, Policy.accelerate)
    p50_ms: float
    p99_ms: float
    forward_p50_ms: float  # one eager encoder + UNet forward
    nfe: int
    max_abs_diff: float  # |this - fp32 eager| actions for the same noise (0 for fp32 eager)
    error: str = ""  # why this mode could not run here (e.g. cuda_graph without CUDA)


@dataclass
class TrainStepResult:
    policy: str
    preset: str
    batch: int
    precision: str
    ms_per_step: float
    loss: float


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
        "point_cloud": torch.rand(batch, c.n_obs_steps, num_points, c.point_dim).to(device),
        "agent_pos": torch.rand(batch, c.n_obs_steps, c.state_dim).to(device),
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
    name: str, preset: str, device: torch.device, calls: int, warmup: int, modes: tuple[str, ...] = ("eager",),
    num_points: int = 512, precisions: tuple[str, ...] = ("fp32",), steps: tuple[int, ...] = (),
) -> list[LatencyResult]:
    """One result per (sampling steps, precision, mode). `steps` are the sampling steps to time
    the flow policies at (empty: each policy's own); DP3 keeps its DDIM steps. The raw forward,
    which does not depend on the steps, is timed once."""
    policy = benchmark_policy(name, preset, device).eval()
    obs = random_obs(policy, 1, num_points, device)

    def forward():
        with torch.inference_mode():
            cond = policy.encode(obs)
            z = torch.randn(1, policy.config.horizon, policy.config.action_dim, device=device)
            t = torch.ones(1, device=device)
            policy.unet(z, t, t, cond)

    raw = float(np.median(timed_ms(forward, device, calls, warmup)))
    counts = steps if steps and not isinstance(policy.objective, Diffusion) else (None,)  # None: the policy's own
    results = []
    for count in counts:
        policy.set_sampling(steps=count)
        results += measure_sampling(policy, obs, raw, preset, device, calls, warmup, modes, precisions)
    return results


def measure_sampling(
    policy: Policy, obs: dict[str, torch.Tensor], raw: float, preset: str, device: torch.device, calls: int,
    warmup: int, modes: tuple[str, ...], precisions: tuple[str, ...],
) -> list[LatencyResult]:
    """`predict_action` at the policy's current sampling settings, per precision and mode."""
    name = policy.name

    def seeded_actions() -> torch.Tensor:
        return policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"]

    reference = seeded_actions()
    results = []
    for precision in precisions:
        for mode in modes:
            try:
                if mode == "onnx":
                    if precision != "fp32":
                        raise ValueError("the ONNX graph is exported in float32")
                    run_graph, difference = onnx_runner(policy, obs, reference)
                else:
                    policy.accelerate(mode, precision)
                    difference = (seeded_actions() - reference).abs().max().item()  # also triggers compile / capture
                    run_graph = lambda: policy.predict_action(obs)  # noqa: E731
            except Exception as error:  # noqa: BLE001 - one mode failing must not lose the others' numbers
                results.append(LatencyResult(name, preset, mode, precision, *[float("nan")] * 3,
                                             policy.objective.sample_steps, float("nan"), f"{type(error).__name__}: {error}"))
                continue
            full = timed_ms(run_graph, device, calls, warmup)
            results.append(LatencyResult(
                name, preset, mode, precision, float(np.median(full)), float(np.percentile(full, 99)), raw,
                policy.objective.sample_steps, difference,
            ))
    policy.accelerate("eager")
    return results


def onnx_runner(policy: Policy, obs: dict[str, torch.Tensor], reference: torch.Tensor) -> tuple[Callable[[], object], float]:
    """onnxruntime on the CPU, timed as a robot would call it: numpy observations in, fresh noise,
    the chunk out; and its largest difference from torch's actions for the same noise."""
    import tempfile

    from mp1.export import export_onnx, onnx_session

    if policy.device.type != "cpu":
        raise ValueError("the onnx mode runs onnxruntime on the CPU; use --device cpu")
    with tempfile.TemporaryDirectory() as folder:
        session = onnx_session(export_onnx(policy, f"{folder}/policy.onnx", obs["point_cloud"].shape[2]),
                               threads=torch.get_num_threads())
    feed = {key: value.numpy() for key, value in obs.items()}
    shape = (1, policy.config.horizon, policy.config.action_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).numpy()
    difference = float(np.abs(session.run(None, {**feed, "noise": noise})[0] - reference.cpu().numpy()).max())
    rng = np.random.default_rng(0)
    return lambda: session.run(None, {**feed, "noise": rng.standard_normal(shape, dtype=np.float32)}), difference


def measure_train_step(
    name: str, preset: str, device: torch.device, batch: int, steps: int, precision: str = "fp32", warmup: int = 2,
    num_points: int = 512,
) -> TrainStepResult:
    from mp1.train import TrainConfig, make_optimizer

    policy = benchmark_policy(name, preset, device).train()
    optimizer = make_optimizer(policy.parameters(), policy.config.train_lr, TrainConfig.betas, TrainConfig.weight_decay)
    data = {
        "obs": random_obs(policy, batch, num_points, device),
        "action": torch.rand(batch, policy.config.horizon, policy.config.action_dim, device=device) * 2 - 1,
    }
    losses = []

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = policy.compute_loss(data, checked=False)  # as the trainer calls it
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not losses:  # the first (warm-up) step's loss only: .item() would sync inside every timed step
            losses.append(loss.item())

    ms = float(np.median(timed_ms(step, device, steps, warmup)))
    return TrainStepResult(name, preset, batch, precision, ms, losses[0])


def latency_report(
    preset: str, device_name: str, calls: int, warmup: int, train_batch: int, train_steps: int,
    modes: tuple[str, ...] = ("eager",), precisions: tuple[str, ...] = ("fp32",), steps: tuple[int, ...] = (),
) -> dict:
    device = resolve_device(device_name)
    latency = [
        r for name in LATENCY_POLICIES
        for r in measure_latency(name, preset, device, calls, warmup, modes, precisions=precisions, steps=steps)
    ]
    training = [
        measure_train_step(name, preset, device, train_batch, train_steps, precision)
        for precision in precisions for name in TRAINING_OBJECTIVES if train_steps > 0
    ]
    return {
        "device": describe_device(device),
        "results": [asdict(r) for r in latency],
        "training": [asdict(r) for r in training],
    }


def format_report(report: dict) -> str:
    """The report as text; it also reads a report back from JSON, where a failed mode's numbers are null."""
    # Reports written before inference precisions existed were float32.
    results = [{"precision": "fp32", **{k: float("nan") if v is None else v for k, v in r.items()}} for r in report["results"]]
    report = {**report, "results": results}
    lines = [f"device: {report['device']}", "",
             "policy      preset  mode        precision  nfe  p50_ms  p99_ms  forward_p50_ms  p50/forward  max|diff| vs fp32 eager"]
    for r in report["results"]:
        lines.append(
            f"{r['policy']:<11} {r['preset']:<7} {r['mode']:<11} {r['precision']:<9}  {r['nfe']:>3} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['forward_p50_ms']:>15.2f} {r['p50_ms'] / r['forward_p50_ms']:>12.2f}  {r['max_abs_diff']:.1e}"
            + (f"  failed: {r['error']}" if r["error"] else "")
        )
    lines.append("")
    for mode, precision in dict.fromkeys((r["mode"], r["precision"]) for r in report["results"]):
        rows = [r for r in report["results"] if (r["mode"], r["precision"]) == (mode, precision)]
        dp3 = next((r["p50_ms"] for r in rows if r["policy"] == "dp3"), float("nan"))
        for r in rows:
            if r["policy"] in ("mp1", "mp1-tuned") and np.isfinite(dp3 / r["p50_ms"]):
                lines.append(f"DP3 / {r['policy']} ({r['nfe']} step{'s' * (r['nfe'] > 1)}) latency ({mode}, {precision}): "
                             f"{dp3 / r['p50_ms']:.1f}x")
    if report["training"]:
        lines += ["", "training step     batch  precision  ms/step  first loss"]
        for r in report["training"]:
            lines.append(f"{r['policy']:<17} {r['batch']:>5}  {r['precision']:<9} {r['ms_per_step']:>8.1f}  {r['loss']:.4f}")
        for precision in dict.fromkeys(r["precision"] for r in report["training"]):
            steps = {r["policy"]: r["ms_per_step"] for r in report["training"] if r["precision"] == precision}
            if {"mp1", "flowmatching"} <= steps.keys():
                lines.append(f"MeanFlow (MP1) step / flow-matching step ({precision}): {steps['mp1'] / steps['flowmatching']:.2f}x")
            if {"mp1", "dp3"} <= steps.keys():
                lines.append(f"MP1 step / DP3 step ({precision}): {steps['mp1'] / steps['dp3']:.2f}x")
    return "\n".join(lines)
