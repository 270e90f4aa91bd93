"""Issue #24's serving targets on loopback, one cpu-preset mp1-tuned policy (random weights: the
cost does not depend on them) whose file records a 640x480 camera pipeline (1024 points):

* round trip of `PolicyClient.act(chunk=True)` sending a ready cloud, and sending the raw
  640x480 uint16 depth frame instead (the server makes the cloud): target <= 6 ms more p50;
* the same with cloud through `mp1 serve --backend onnx`: target p50 <= half of torch eager's.

    python benchmarks/raw_depth_serving.py [--calls 200] [--out benchmarks/results/serve]

Run on a quiet machine and note the load average (it is written with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mp1.policies import make_policy
from mp1.runtime import Camera, CloudMaker, CloudPipeline, LinearNormalizer
from mp1.serving import PolicyClient


def camera_pipeline() -> CloudPipeline:
    """A RealSense-like camera 0.8 m above a table, looking down."""
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = np.diag([1.0, -1.0, -1.0])
    extrinsics[2, 3] = 0.8
    camera = Camera("front", 640, 480, [[615.0, 0, 319.5], [0, 615.0, 239.5], [0, 0, 1]], extrinsics, max_depth=2.0)
    return CloudPipeline((camera,), crop_low=(-0.4, -0.3, -0.01), crop_high=(0.4, 0.3, 0.4), num_points=1024)


def scene(rng: np.random.Generator) -> np.ndarray:
    """A table with a few boxes, uint16 millimetres, with sensor noise."""
    depth = np.full((480, 640), 800.0)
    for _ in range(3):
        row, column, height = rng.integers(80, 380), rng.integers(80, 540), rng.integers(50, 250)
        depth[row : row + 60, column : column + 80] = 800 - height
    return (depth + rng.normal(0, 2, depth.shape)).astype(np.uint16)


def serve(policy_file: Path, backend: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mp1", "serve", str(policy_file), "--port", str(port),
                                "--backend", backend], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port


def round_trips(port: int, observations: list[dict], calls: int) -> list[float]:
    with PolicyClient(port=port, reconnect_s=180) as client:
        for obs in observations[:10]:  # warm-up
            client.act(obs, chunk=True)
        times = []
        for i in range(calls):
            start = time.perf_counter()
            client.act(observations[i % len(observations)], chunk=True)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/serve")
    args = parser.parse_args()

    pipeline, rng = camera_pipeline(), np.random.default_rng(0)
    maker = CloudMaker(pipeline)
    frames = [scene(rng) for _ in range(8)]
    clouds = [maker(frame) for frame in frames]
    states = [rng.random(9).astype(np.float32) for _ in frames]
    policy = make_policy("mp1-tuned", preset="cpu")
    dims = {"point_cloud": 3, "agent_pos": 9, "action": 4}
    fit = {"point_cloud": np.concatenate(clouds), "agent_pos": np.stack(states), "action": rng.random((16, 4))}
    policy.set_normalizer(LinearNormalizer(dims).fit(fit))
    results = {"load_average_at_start": os.getloadavg(), "calls": args.calls}
    with tempfile.TemporaryDirectory() as folder:
        policy_file = Path(folder) / "policy.pt"
        policy.save(policy_file, extra={"observation": {"num_points": 1024}, "pipeline": pipeline.to_dict()})
        cases = {
            "torch, cloud": ("torch", [{"point_cloud": c, "agent_pos": s} for c, s in zip(clouds, states)]),
            "torch, raw depth": ("torch", [{"depth": f, "agent_pos": s} for f, s in zip(frames, states)]),
            "onnx, cloud": ("onnx", [{"point_cloud": c, "agent_pos": s} for c, s in zip(clouds, states)]),
        }
        for name, (backend, observations) in cases.items():
            process, port = serve(policy_file, backend)
            try:
                times = round_trips(port, observations, args.calls)
            finally:
                process.kill()
                process.wait()
            results[name] = {"p50_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}
            print(f"{name:<18} p50 {results[name]['p50_ms']:6.2f} ms   p90 {results[name]['p90_ms']:6.2f} ms", flush=True)
    extra = results["torch, raw depth"]["p50_ms"] - results["torch, cloud"]["p50_ms"]
    ratio = results["onnx, cloud"]["p50_ms"] / results["torch, cloud"]["p50_ms"]
    results["raw_depth_extra_p50_ms"], results["onnx_over_torch_p50"] = extra, ratio
    print(f"raw depth costs {extra:+.2f} ms p50 (target <= 6); onnx / torch p50 = {ratio:.2f} (target <= 0.5)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw_depth_serving.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
