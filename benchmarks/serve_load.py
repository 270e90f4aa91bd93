"""Load and fault test of `mp1 serve` on loopback (bounded in calls and seconds).

1. Round trip: `PolicyClient.act(obs, chunk=True)` (a policy call every time) against the same
   `PolicyRunner.plan` in process on the same observations, p50/p99 over `--calls` calls each:
   what the server and the network add.
2. Concurrency: `--clients` clients in threads for `--seconds` seconds: replies, errors, per-client p99.
3. Faults: malformed frames, clients killed mid-request, a server restart mid-episode.

The policy is a freshly initialised cpu-preset MP1 (timing does not depend on the weights), 512
points. Usage: python benchmarks/serve_load.py [--calls 500] [--clients 8] [--seconds 60]
[--out benchmarks/results/serve]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from mp1.bench import benchmark_policy
from mp1.runtime import PolicyRunner, load_policy
from mp1.serving import PolicyClient, PolicyServerError
from mp1.serving.wire import pack, unpack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(policy: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "mp1", "serve", str(policy), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def observation(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"point_cloud": rng.random((512, 3), dtype=np.float32), "agent_pos": rng.random(9, dtype=np.float32)}


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def round_trip(policy_path: Path, port: int, calls: int, warmup: int = 20) -> dict:
    """The same observations in process, then through the server (idle while the other runs:
    interleaving them lets the server's OpenMP threads, which spin after each call, slow both)."""
    rng = np.random.default_rng(0)
    observations = [observation(rng) for _ in range(calls + warmup)]
    runner = PolicyRunner(load_policy(policy_path))
    local, remote, server = [], [], []
    for i, obs in enumerate(observations):
        start = time.perf_counter()
        runner.plan(obs)
        if i >= warmup:
            local.append((time.perf_counter() - start) * 1e3)
    with PolicyClient(port=port, reconnect_s=60) as client:
        for i, obs in enumerate(observations):
            start = time.perf_counter()
            client.act(obs, chunk=True)
            if i >= warmup:
                remote.append((time.perf_counter() - start) * 1e3)
                server.append(client.last_timing["server_ms"])
    result = {"in_process": percentiles(local), "through_server": percentiles(remote), "server_side": percentiles(server)}
    result["added_p50_ms"] = result["through_server"]["p50_ms"] - result["in_process"]["p50_ms"]
    return result


def concurrency(port: int, clients: int, seconds: float) -> dict:
    stop = time.monotonic() + seconds
    per_client: list[dict] = [{} for _ in range(clients)]

    def worker(index: int) -> None:
        rng = np.random.default_rng(index)
        latencies, errors, sent = [], 0, 0
        with PolicyClient(port=port, reconnect_s=60) as client:
            while time.monotonic() < stop:
                sent += 1
                start = time.perf_counter()
                try:
                    action = client.act(observation(rng))
                    assert action.shape == (4,) and np.isfinite(action).all()
                    latencies.append((time.perf_counter() - start) * 1e3)
                except (PolicyServerError, AssertionError):
                    errors += 1
        per_client[index] = {"sent": sent, "replies": len(latencies), "errors": errors, **percentiles(latencies)}

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"clients": clients, "seconds": seconds, "per_client": per_client,
            "errors": sum(c["errors"] for c in per_client), "dropped": sum(c["sent"] - c["replies"] - c["errors"] for c in per_client)}


def faults(policy_path: Path, port: int, threads: int) -> dict:
    from websockets.sync.client import connect

    rng = np.random.default_rng(1)
    good = {"type": "act", "obs": observation(rng)}
    malformed = {
        "garbage bytes": b"\x00\x01\x02garbage",
        "text frame": "hello",
        "unknown type": pack({"type": "fly"}),
        "missing key": pack({"type": "act", "obs": {"agent_pos": np.zeros(9, np.float32)}}),
        "wrong shape": pack({"type": "act", "obs": {"point_cloud": np.zeros((512, 4), np.float32), "agent_pos": np.zeros(9, np.float32)}}),
        "NaN": pack({"type": "act", "obs": {"point_cloud": np.full((512, 3), np.nan, np.float32), "agent_pos": np.zeros(9, np.float32)}}),
        "bad array header": pack({"type": "act", "obs": {"point_cloud": {"__ndarray__": True, "dtype": "<f4", "shape": [9], "data": b"1"}}}),
    }
    results = {}
    with connect(f"ws://127.0.0.1:{port}", open_timeout=60, max_size=None) as ws:
        unpack(ws.recv(timeout=30))
        for name, frame in malformed.items():
            ws.send(frame)
            reply = unpack(ws.recv(timeout=30))
            ws.send(pack(good))
            after = unpack(ws.recv(timeout=30))
            results[f"malformed: {name}"] = {
                "error reply": reply.get("error", "")[:120], "served after": after.get("type") == "action",
                "ok": reply.get("type") == "error" and after.get("type") == "action",
            }
    code = (f"from mp1.serving import PolicyClient\nimport numpy as np\nc = PolicyClient(port={port})\n"
            "obs = {'point_cloud': np.random.rand(512, 3).astype(np.float32), 'agent_pos': np.zeros(9, np.float32)}\n"
            "print('ready', flush=True)\nwhile True: c.act(obs)\n")
    for i in range(3):  # killed in the middle of its request loop
        client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        client.stdout.readline()
        time.sleep(0.3)
        client.send_signal(signal.SIGKILL)
        client.wait()
    with PolicyClient(port=port) as survivor:
        results["killed clients (3)"] = {"ok": survivor.act(good["obs"]).shape == (4,)}
    return results


def restart_mid_episode(policy_path: Path, threads: int) -> dict:
    port = free_port()
    rng = np.random.default_rng(2)
    server = start_server(policy_path, port, threads)
    client = PolicyClient(port=port, reconnect_s=90)
    try:
        for _ in range(5):
            client.act(observation(rng))
        server.kill()
        server.wait()
        server = start_server(policy_path, port, threads)
        start = time.perf_counter()
        action = client.act(observation(rng))
        return {"ok": action.shape == (4,) and client.reconnects == 1, "reconnects": client.reconnects,
                "first_reply_after_restart_s": time.perf_counter() - start}
    finally:
        client.close()
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server and the in-process runner")
    parser.add_argument("--out", default="benchmarks/results/serve")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        policy_path = Path(folder) / "policy.pt"
        benchmark_policy("mp1", "cpu", torch.device("cpu")).save(policy_path)
        port = free_port()
        server = start_server(policy_path, port, args.threads)
        try:
            report = {"load_average": os.getloadavg(), "round_trip": round_trip(policy_path, port, args.calls)}
            report["concurrency"] = concurrency(port, args.clients, args.seconds)
            report["faults"] = faults(policy_path, port, args.threads)
        finally:
            server.kill()
            server.wait()
        report["faults"]["server restart mid-episode"] = restart_mid_episode(policy_path, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=1))
    rt = report["round_trip"]
    lines = [
        f"# mp1 serve on loopback (cpu preset MP1, 512 points, {args.threads} torch threads; load average at start "
        f"{report['load_average'][0]:.2f})", "",
        "| path | p50 ms | p99 ms | calls |", "| --- | --- | --- | --- |",
        *[f"| {name} | {rt[key]['p50_ms']:.2f} | {rt[key]['p99_ms']:.2f} | {rt[key]['calls']} |"
          for name, key in (("in-process `PolicyRunner.plan`", "in_process"), ("through `mp1 serve` (client round trip)", "through_server"),
                            ("server side of it (frame in to reply out)", "server_side"))],
        "", f"Added by the server and the network: **{rt['added_p50_ms']:.2f} ms** at p50.", "",
        f"{args.clients} concurrent clients for {args.seconds:.0f} s: {report['concurrency']['errors']} errors, "
        f"{report['concurrency']['dropped']} dropped replies.", "",
        "| client | replies | p50 ms | p99 ms |", "| --- | --- | --- | --- |",
        *[f"| {i} | {c['replies']} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} |" for i, c in enumerate(report["concurrency"]["per_client"])],
        "", "| fault | handled |", "| --- | --- |",
        *[f"| {name} | {'yes' if r['ok'] else 'NO'} |" for name, r in report["faults"].items()],
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    failed = [name for name, r in report["faults"].items() if not r["ok"]]
    sys.exit(1 if failed or report["concurrency"]["errors"] or report["concurrency"]["dropped"] else 0)


if __name__ == "__main__":
    main()
