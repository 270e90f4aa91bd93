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
from mp1.policies.policy import Policy, read_policy_file
from mp1.runtime import PolicyRunner
from mp1.serving.wire import WireError, pack, unpack


# The largest frame accepted: an observation of 512 XYZRGB points is 12 KB; a few MB leave
# room for dense clouds while no client can make the server buffer gigabytes.
MAX_FRAME_BYTES = 16 * 2**20


class PolicyServer:
    def __init__(
        self, policy_path: str | Path, device: str = "cpu", seed: int = 0, noise_scale: float | None = None,
        steps: int | None = None,
    ):
        payload = read_policy_file(policy_path)
        self.policy = Policy.from_payload(payload, device=device, source=str(policy_path))
        self.policy.set_sampling(noise_scale, steps)
        self.seed = seed
        c = self.policy.config
        extra = payload["extra"]
        self.metadata = {
            "type": "metadata", "mp1_version": mp1.__version__, "policy": self.policy.name,
            "task": extra.get("task"), "observation": extra.get("observation"),
            "n_obs_steps": c.n_obs_steps, "n_action_steps": c.n_action_steps, "horizon": c.horizon,
            "action_dim": c.action_dim, "state_dim": c.state_dim, "point_dim": c.point_dim,
            "device": str(self.policy.device), "noise_scale": c.noise_scale, "sample_steps": c.objective.sample_steps,
        }
        self.num_points = (extra.get("observation") or {}).get("num_points")
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()

    def on_main_thread(self, job: Callable[[], Any]) -> Any:
        """Runs `job` on the thread in `run_jobs` and returns its result (or raises its error)."""
        future: Future = Future()
        self._jobs.put((job, future))
        return future.result()

    def run_jobs(self) -> None:
        """Serves `on_main_thread` until interrupted (Ctrl-C)."""
        try:
            while True:
                job, future = self._jobs.get()
                try:
                    future.set_result(job())
                except Exception as error:  # noqa: BLE001 - handed back to the connection that asked
                    future.set_exception(error)
        finally:  # shutting down: answer whoever still waits, so no connection thread hangs
            while not self._jobs.empty():
                self._jobs.get_nowait()[1].set_exception(RuntimeError("the server is shutting down"))

    def handle(self, connection: ServerConnection) -> None:
        """One connection: its own runner (observation history, chunk), for as long as it lasts."""
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
                self.on_main_thread(runner.reset)
                reply: dict[str, Any] = {"type": "reset"}
            else:
                obs = self.check_obs(request.get("obs"))
                calls = len(runner.latencies_ms)
                action = self.on_main_thread(lambda: runner.plan(obs) if request.get("chunk") else runner.act(obs))
                if len(runner.latencies_ms) > calls:
                    infer_ms = runner.latencies_ms[-1]
                reply = {"type": "action", "action": np.asarray(action, dtype=np.float32)}
        except Exception as error:  # noqa: BLE001 - a bad request or a failed policy call: reply, keep serving
            message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            return {"type": "error", "error": message}
        reply["timing"] = {"server_ms": (time.perf_counter() - received) * 1e3, "infer_ms": infer_ms}
        return reply

    def check_obs(self, obs: Any) -> dict[str, np.ndarray]:
        """One observation step, checked before it enters the runner's history: the point count
        must be the one the policy was trained on (when its file records it), as every step of a
        runner's history must have the same shape."""
        c = self.policy.config
        if not isinstance(obs, dict):
            raise WireError("'obs' must be a map with 'point_cloud' and 'agent_pos'")
        expected = {"point_cloud": (self.num_points, c.point_dim), "agent_pos": (c.state_dim,)}
        checked = {}
        for key, shape in expected.items():
            value = obs.get(key)
            described = "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
            if not isinstance(value, np.ndarray):
                raise WireError(f"'obs.{key}' is missing or not an array; expected shape {described}")
            fits = value.ndim == len(shape) and all(d is None or d == got for d, got in zip(shape, value.shape))
            if not fits or value.size == 0:
                raise WireError(f"'obs.{key}' has shape {value.shape}; expected {described}")
            if value.dtype.kind != "f" or not np.isfinite(value).all():
                raise WireError(f"'obs.{key}' must be finite floats (dtype {value.dtype})")
            checked[key] = value.astype(np.float32)
        return checked


def run_server(
    policy_path: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", seed: int = 0,
    noise_scale: float | None = None, steps: int | None = None,
) -> None:
    server = PolicyServer(policy_path, device=device, seed=seed, noise_scale=noise_scale, steps=steps)
    with serve(server.handle, host, port, max_size=MAX_FRAME_BYTES, compression=None) as websocket_server:
        connections = threading.Thread(target=websocket_server.serve_forever, daemon=True)
        connections.start()
        print(f"serving {server.metadata['policy']} ({policy_path}) on ws://{host}:{port}", flush=True)
        try:
            server.run_jobs()  # the policy runs here, on the main thread, until interrupted
        finally:
            websocket_server.shutdown()
