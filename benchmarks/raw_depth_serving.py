"""Issue #24's serving targets on loopback, one cpu-preset mp1-tuned policy (random weights: the
cost does not depend on them) whose file records a 640x480 camera pipeline:

* round trip of `PolicyClient.act(chunk=True)` sending a ready cloud, and sending the raw
  640x480 uint16 depth frame instead (the server makes the cloud): target <= 6 ms more p50;
* the same with cloud through `mp1 serve --backend onnx`: target p50 <= half of torch eager's.

The raw frame and the cloud take turns call by call on the same server, so that difference is
measured in one process and the same minutes (separate runs of one server differed by up to 3 ms
p50 here); ONNX and torch are separate servers, run one after the other (two servers at once on 2
cores slow each other: their idle threads spin).

The frames show a table 0.8 m below the camera with three boxes on it. The cloud maker's cost
grows with the pixels inside the crop box, so raw depth is timed with two boxes: the workspace
above the table (``objects``: the table cropped out, as DP3's pipelines crop it; ~14,000 pixels
in the box) and one that starts 1 cm below the table top (``table``: ~284,000 of the 307,200
pixels, the worst case), one policy file and server each. Each point count in ``--points`` is a
separate round of servers (512: what every simulated task of mp1 uses).

    python benchmarks/raw_depth_serving.py [--calls 200] [--points 512,1024] [--out benchmarks/results/serve]

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


#: Crop boxes (low z, high z) in the base frame, whose z = 0 is the table top.
CROP_HEIGHTS = {"objects": (0.02, 0.4), "table": (-0.01, 0.4)}


def camera_pipeline(scene_name: str, num_points: int) -> CloudPipeline:
    """A RealSense-like camera 0.8 m above a table, looking down."""
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = np.diag([1.0, -1.0, -1.0])
    extrinsics[2, 3] = 0.8
    camera = Camera("front", 640, 480, [[615.0, 0, 319.5], [0, 615.0, 239.5], [0, 0, 1]], extrinsics, max_depth=2.0)
    low, high = CROP_HEIGHTS[scene_name]
    return CloudPipeline((camera,), crop_low=(-0.4, -0.3, low), crop_high=(0.4, 0.3, high), num_points=num_points)


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


def alternating_round_trips(port: int, cases: dict[str, list[dict]], calls: int) -> dict[str, dict[str, list[float]]]:
    """Per case and call: the round trip, the server's part of it (from the request's arrival to
    its reply, cloud making included) and the policy's (`infer_ms`), all in ms. The cases (kinds of
    request to one server) take turns call by call, in a new random order each round, so they
    are compared in the same process and minutes."""
    times = {name: {"round_trip": [], "server": [], "policy": []} for name in cases}
    order = np.random.default_rng(0)
    with PolicyClient(port=port, reconnect_s=180) as client:
        for i in range(10 + calls):  # the first 10 rounds warm up
            for name in order.permutation(list(cases)):
                observations = cases[name]
                start = time.perf_counter()
                client.act(observations[i % len(observations)], chunk=True)
                if i >= 10:
                    times[name]["round_trip"].append((time.perf_counter() - start) * 1e3)
                    times[name]["server"].append(client.last_timing["server_ms"])
                    times[name]["policy"].append(client.last_timing["infer_ms"])
    return times


def policy_file(path: Path, pipeline: CloudPipeline, clouds: list[np.ndarray], states: list[np.ndarray]) -> Path:
    """Writes a cpu-preset mp1-tuned file (random weights) that records ``pipeline`` to ``path``."""
    policy = make_policy("mp1-tuned", preset="cpu")
    dims = {"point_cloud": 3, "agent_pos": 9, "action": 4}
    fit = {"point_cloud": np.concatenate(clouds), "agent_pos": np.stack(states), "action": np.linspace(-1, 1, 64).reshape(16, 4)}
    policy.set_normalizer(LinearNormalizer(dims).fit(fit))
    policy.save(path, extra={"observation": {"num_points": pipeline.num_points}, "pipeline": pipeline.to_dict()})
    return path


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    return {"p50_ms": float(np.median(times["round_trip"])), "p90_ms": float(np.percentile(times["round_trip"], 90)),
            "server_p50_ms": float(np.median(times["server"])), "policy_p50_ms": float(np.median(times["policy"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--points", default="512,1024", help="comma-separated point counts, one run each")
    parser.add_argument("--out", default="benchmarks/results/serve")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frames = [scene(rng) for _ in range(8)]
    states = [rng.random(9).astype(np.float32) for _ in frames]
    results: dict = {"load_average_at_start": os.getloadavg(), "calls": args.calls,
                     "pixels_in_box": {name: int(CloudMaker(camera_pipeline(name, 512)).points(frames[0]).shape[0])
                                       for name in CROP_HEIGHTS}}
    for num_points in (int(n) for n in args.points.split(",")):
        pipelines = {name: camera_pipeline(name, num_points) for name in CROP_HEIGHTS}
        clouds = [CloudMaker(pipelines["table"])(frame) for frame in frames]
        run: dict = {}
        with tempfile.TemporaryDirectory() as folder:
            files = {name: policy_file(Path(folder) / f"{name}.pt", pipeline, clouds, states) for name, pipeline in pipelines.items()}
            with_clouds = [{"point_cloud": c, "agent_pos": s} for c, s in zip(clouds, states)]
            with_depth = [{"depth": f, "agent_pos": s} for f, s in zip(frames, states)]
            servers = {("torch", crop): {"cloud": with_clouds, "raw depth": with_depth} for crop in CROP_HEIGHTS}
            servers["onnx", "table"] = {"cloud": with_clouds}
            times = {}
            for (backend, crop), cases in servers.items():  # one server at a time: none slows another
                process, port = serve(files[crop], backend)
                try:
                    for kind, case_times in alternating_round_trips(port, cases, args.calls).items():
                        times[f"{backend}, {kind}, {crop}"] = case_times
                finally:
                    process.kill()
                    process.wait()
        for name in times:
            run[name] = summary(times[name])
            print(f"{num_points} points, {name:<30} p50 {run[name]['p50_ms']:6.2f} ms   p90 {run[name]['p90_ms']:6.2f} ms"
                  f"   (server {run[name]['server_p50_ms']:5.2f}, policy {run[name]['policy_p50_ms']:5.2f})", flush=True)
        run["raw_depth_extra_p50_ms"] = {crop: run[f"torch, raw depth, {crop}"]["p50_ms"] - run[f"torch, cloud, {crop}"]["p50_ms"]
                                         for crop in CROP_HEIGHTS}
        run["onnx_over_torch_p50"] = run["onnx, cloud, table"]["p50_ms"] / run["torch, cloud, table"]["p50_ms"]
        extra = ", ".join(f"{name} {value:+.2f} ms" for name, value in run["raw_depth_extra_p50_ms"].items())
        print(f"{num_points} points: raw depth costs {extra} p50 (target <= 6); "
              f"onnx / torch p50 = {run['onnx_over_torch_p50']:.2f} (target <= 0.5)")
        results[f"{num_points} points"] = run
    results["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw_depth_serving.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
