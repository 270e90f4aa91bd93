"""`mp1 serve`: a policy behind a websocket, one `PolicyRunner` per connection.

Protocol (binary msgpack frames, `mp1.serving.wire`): on connect the server sends
`{"type": "metadata", ...}`; then each request gets one reply:

    {"type": "act", "obs": {"point_cloud": (N, C), "agent_pos": (Ds,)}, "chunk": false}
        -> {"type": "action", "action": (Da,) or (n_action_steps, Da), "timing": {...}}
    {"type": "reset"} -> {"type": "reset", "timing": {...}}
    anything malformed -> {"type": "error", "error": "what is wrong"}   (the connection stays open)

`timing` holds `server_ms` (frame in to reply out) and `infer_ms` (the policy call, 0 when the
action came from the current chunk). A client that disappears costs its connection only.

Connections are served by websockets' threads, but every runner call is handed to the main
thread: torch's CPU kernels ran about 2x slower when called from other threads here (5.2 vs
10.2 ms per cpu-preset chunk with 2 threads; OpenMP thread teams per calling thread), and the
calls share the same cores anyway.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

import mp1
from mp1.policies.policy import read_policy_file
from mp1.runtime import PolicyRunner, load_policy
from mp1.serving.wire import WireError, pack, unpack


class PolicyServer:
    def __init__(self, policy_path: str | Path, device: str = "cpu", seed: int = 0):
        self.policy = load_policy(policy_path, device=device)
        self.seed = seed
        c = self.policy.config
        extra = read_policy_file(policy_path)["extra"]
        self.metadata = {
            "type": "metadata", "mp1_version": mp1.__version__, "policy": self.policy.name,
            "task": extra.get("task"), "observation": extra.get("observation"),
            "n_obs_steps": c.n_obs_steps, "n_action_steps": c.n_action_steps, "horizon": c.horizon,
            "action_dim": c.action_dim, "state_dim": c.state_dim, "point_dim": c.point_dim,
            "device": str(self.policy.device),
        }
        self.connections = 0
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()

    def on_main_thread(self, job: Callable[[], Any]) -> Any:
        """Runs `job` on the thread in `run_jobs` and returns its result (or raises its error)."""
        future: Future = Future()
        self._jobs.put((job, future))
        return future.result()

    def run_jobs(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                job, future = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                future.set_result(job())
            except Exception as error:  # noqa: BLE001 - handed back to the connection that asked
                future.set_exception(error)

    def handle(self, connection: ServerConnection) -> None:
        """One connection: its own runner (observation history, chunk), for as long as it lasts."""
        with self._lock:
            self.connections += 1
        runner = PolicyRunner(self.policy, seed=self.seed)
        try:
            connection.send(pack(self.metadata))
            for frame in connection:
                connection.send(pack(self.respond(runner, frame)))
        except ConnectionClosed:
            pass  # the client went away, possibly mid-request: nothing to clean up but its runner

    def respond(self, runner: PolicyRunner, frame: bytes | str) -> dict[str, Any]:
        received = time.perf_counter()
        try:
            request = unpack(frame)
            if not isinstance(request, dict) or request.get("type") not in ("act", "reset"):
                raise WireError("expected a message {'type': 'act' | 'reset', ...}")
            infer_ms = 0.0
            if request["type"] == "reset":
                runner.reset()
                reply: dict[str, Any] = {"type": "reset"}
            else:
                obs = self.check_obs(request.get("obs"))
                calls = len(runner.latencies_ms)
                action = self.on_main_thread(lambda: runner.plan(obs) if request.get("chunk") else runner.act(obs))
                if len(runner.latencies_ms) > calls:
                    infer_ms = runner.latencies_ms[-1]
                reply = {"type": "action", "action": np.asarray(action, dtype=np.float32)}
        except (WireError, ValueError, TypeError) as error:
            return {"type": "error", "error": str(error)}
        reply["timing"] = {"server_ms": (time.perf_counter() - received) * 1e3, "infer_ms": infer_ms}
        return reply

    def check_obs(self, obs: Any) -> dict[str, np.ndarray]:
        """One observation step, checked before it enters the runner's history."""
        c = self.policy.config
        if not isinstance(obs, dict):
            raise WireError("'obs' must be a map with 'point_cloud' and 'agent_pos'")
        expected = {"point_cloud": f"(N, {c.point_dim})", "agent_pos": f"({c.state_dim},)"}
        checked = {}
        for key, shape in expected.items():
            value = obs.get(key)
            if not isinstance(value, np.ndarray):
                raise WireError(f"'obs.{key}' is missing or not an array; expected shape {shape}")
            ok = (value.ndim == 2 and value.shape[1] == c.point_dim and len(value) > 0) if key == "point_cloud" \
                else value.shape == (c.state_dim,)
            if not ok:
                raise WireError(f"'obs.{key}' has shape {value.shape}; expected {shape}")
            if value.dtype.kind != "f" or not np.isfinite(value).all():
                raise WireError(f"'obs.{key}' must be finite floats (dtype {value.dtype})")
            checked[key] = value.astype(np.float32)
        return checked


def run_server(policy_path: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", seed: int = 0) -> None:
    server = PolicyServer(policy_path, device=device, seed=seed)
    stop = threading.Event()
    with serve(server.handle, host, port, max_size=None, compression=None) as websocket_server:
        connections = threading.Thread(target=websocket_server.serve_forever, daemon=True)
        connections.start()
        print(f"serving {server.metadata['policy']} ({policy_path}) on ws://{host}:{port}", flush=True)
        try:
            server.run_jobs(stop)  # the policy runs here, on the main thread, until interrupted
        finally:
            stop.set()
            websocket_server.shutdown()
