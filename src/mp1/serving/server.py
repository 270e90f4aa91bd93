"""`mp1 serve`: a policy behind a websocket, one `PolicyRunner` per connection.

Protocol (binary msgpack frames, `mp1.serving.wire`): on connect the server sends
`{"type": "metadata", ...}`; then each request gets one reply:

    {"type": "act", "obs": {"point_cloud": (N, C), "agent_pos": (Ds,)}, "chunk": false}
        -> {"type": "action", "action": (Da,) or (n_action_steps, Da), "timing": {...}}
    {"type": "plan", "history": [obs, ...]} -> {"type": "action", "action": (n_action_steps, Da), ...}
        (a chunk from the client's own last observations: `StreamingClient` asks ahead with it)
    {"type": "reset", "seed": 7} -> {"type": "reset", "timing": {...}}   (seed optional)
    anything malformed -> {"type": "error", "error": "what is wrong"}   (the connection stays open)

`timing` holds `server_ms` (frame in to reply out) and `infer_ms` (the policy call, 0 when the
action came from the current chunk). A client that disappears costs its connection only. Each
connection's noise starts from its own seed (`seed` + the connection's number); a reset with a
seed makes an episode's actions those of `mp1 eval` for the same seed. `GET /health` answers
200 with the policy's name. With a token (`--token` or `MP1_SERVE_TOKEN`), a connection must
send it as `Authorization: Bearer <token>`, or it is closed with code 1008 and a reason before
anything reaches the policy. Failures are logged; SIGINT and SIGTERM stop the server, answering
every request still waiting; a second one stops it at once.

Connections are served by websockets' threads, but every runner call is handed to the main
thread: torch's CPU kernels ran about 2x slower when called from other threads here (5.2 vs
10.2 ms per cpu-preset chunk with 2 threads; OpenMP thread teams per calling thread), and the
calls share the same cores anyway.
"""

from __future__ import annotations

import hmac
import http
import itertools
import logging
import os
import queue
import signal
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import ServerConnection, serve

import mp1
from mp1.policies.policy import Policy, read_policy_file
from mp1.runtime import PolicyRunner
from mp1.runtime.contract import ObservationContract
from mp1.runtime.runner import recorded_cloud_maker
from mp1.serving.wire import WireError, pack, unpack


# The largest frame accepted: an observation of 512 XYZRGB points is 12 KB; a few MB leave
# room for dense clouds while no client can make the server buffer gigabytes.
MAX_FRAME_BYTES = 16 * 2**20
TOKEN_ENV = "MP1_SERVE_TOKEN"
# How long closing a connection waits for the peer's side of the closing handshake. Shutting down
# waits for every connection to close, so a client that has stopped answering (a vanished robot
# process, a refused one not yet collected) would otherwise hold the exit for websockets' 10 s.
CLOSE_TIMEOUT_S = 0.5
# How often the main thread, waiting for a job, looks at whether a stop was asked for: a signal
# the kernel hands to another thread (any thread may take a process's SIGTERM) reaches Python's
# handler only when the main thread runs Python again.
SIGNAL_POLL_S = 0.2

log = logging.getLogger("mp1.serve")


class ShuttingDown(RuntimeError):
    """The server stopped while a request waited for the policy."""


class PolicyServer:
    def __init__(
        self, policy_path: str | Path, device: str = "cpu", seed: int = 0, noise_scale: float | None = None,
        steps: int | None = None, token: str | None = None, backend: str = "torch", threads: int = 0,
    ):
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: the library's default), got {threads}")
        if threads and backend == "torch":
            torch.set_num_threads(threads)
        payload = read_policy_file(policy_path)
        self.policy = Policy.from_payload(payload, device=device, source=str(policy_path))
        self.policy.set_sampling(noise_scale, steps)
        extra = payload["extra"]
        if backend == "onnx":  # the exported graph with onnxruntime: a CPU robot's fastest path
            from mp1.export import OnnxPolicy

            if device != "cpu":
                raise ValueError("--backend onnx runs onnxruntime on the CPU; use --device cpu")
            self.policy = OnnxPolicy(self.policy, (extra.get("observation") or {}).get("num_points", 512), threads)
        elif backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; choose torch or onnx")
        self.seed = seed
        c = self.policy.config
        self.metadata = {
            "type": "metadata", "mp1_version": mp1.__version__, "policy": self.policy.name,
            "task": extra.get("task"), "observation": extra.get("observation"),
            "n_obs_steps": c.n_obs_steps, "n_action_steps": c.n_action_steps, "horizon": c.horizon,
            "action_dim": c.action_dim, "state_dim": c.state_dim, "point_dim": c.point_dim,
            "device": str(self.policy.device), "backend": backend, "threads": threads,  # 0: the library's default
            "noise_scale": c.noise_scale,
            "sample_steps": c.objective.sample_steps, "pipeline": extra.get("pipeline"),
        }
        self.contract = ObservationContract.of(c, extra)
        self.metadata["contract"] = self.contract.to_dict()
        # One maker for every connection (it holds per-pixel tables); raw depth is accepted when the policy records its pipeline.
        self.cloud_maker = recorded_cloud_maker(extra)
        self.token = token
        self._connections = itertools.count()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self._closing = threading.Lock()  # held while a job is queued or the queue is drained
        self._closed = False
        # Set by the SIGINT/SIGTERM handler. A flag, not KeyboardInterrupt: an exception raised in the
        # main thread at an arbitrary point can leave the job queue's lock held, and the server hung.
        self.stop_requested = False
        self._every_connection: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        self._every_connection_lock = threading.Lock()

    def new_connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """websockets' connection, remembered from its first byte: the server lists a connection
        only once its opening handshake is done, and one that never sends its request (a port
        scan, a half-open socket) would hold shutting down for websockets' 10 s open timeout."""
        connection = ServerConnection(*args, **kwargs)
        with self._every_connection_lock:
            self._every_connection.add(connection)
        return connection

    def drop_opening_connections(self) -> None:
        """Closes the sockets of connections still in their opening handshake (while stopping,
        the server would refuse them anyway)."""
        with self._every_connection_lock:
            opening = [c for c in self._every_connection if c.protocol.state is State.CONNECTING]
        for connection in opening:
            connection.close_socket()

    def on_main_thread(self, job: Callable[[], Any]) -> Any:
        """Runs `job` on the thread in `run_jobs` and returns its result (or raises its error)."""
        future: Future = Future()
        with self._closing:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            self._jobs.put((job, future))
        return future.result()

    def run_jobs(self) -> None:
        """Serves `on_main_thread` until a stop is requested (Ctrl-C or SIGTERM). The job running
        then finishes and is answered; every job still queued is answered with `ShuttingDown`, so
        no connection thread is left waiting."""
        try:
            while not self.stop_requested:
                try:
                    job, future = self._jobs.get(timeout=SIGNAL_POLL_S)
                except queue.Empty:
                    continue
                try:
                    future.set_result(job())
                except Exception as error:  # noqa: BLE001 - handed back to the connection that asked
                    future.set_exception(error)
        finally:
            with self._closing:
                self._closed = True
            while not self._jobs.empty():
                self._jobs.get_nowait()[1].set_exception(ShuttingDown("the server is shutting down"))

    def authorised(self, connection: ServerConnection) -> bool:
        """The shared token, when one is set, compared in constant time."""
        if self.token is None:
            return True
        sent = connection.request.headers.get("Authorization", "") if connection.request else ""
        return hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode())

    def handle(self, connection: ServerConnection) -> None:
        """One connection: its own runner (observation history, chunk) and noise seed, for as long as it lasts."""
        number = next(self._connections)
        if not self.authorised(connection):
            log.warning("connection %d from %s refused: missing or wrong token", number, connection.remote_address)
            connection.close(CloseCode.POLICY_VIOLATION, "missing or wrong token")
            return
        runner = PolicyRunner(self.policy, seed=self.seed + number, cloud_maker=self.cloud_maker, contract=self.contract)
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
            if not isinstance(request, dict) or request.get("type") not in ("act", "plan", "reset"):
                raise WireError("expected a message {'type': 'act' | 'plan' | 'reset', ...}")
            infer_ms = 0.0
            if request["type"] == "reset":
                seed = request.get("seed")
                if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
                    raise WireError(f"'seed' must be a non-negative integer, got {seed!r}")
                self.on_main_thread(lambda: runner.reset(seed))
                reply: dict[str, Any] = {"type": "reset"}
            else:
                calls = len(runner.latencies_ms)
                if request["type"] == "plan":
                    history = request.get("history")
                    if not isinstance(history, list) or not history:
                        raise WireError("'history' must be a non-empty list of observations, oldest first")
                    action = self.on_main_thread(lambda: runner.plan_from(history))
                else:
                    obs = request.get("obs")  # the runner checks it against the contract, before its history
                    action = self.on_main_thread(lambda: runner.plan(obs) if request.get("chunk") else runner.act(obs))
                if len(runner.latencies_ms) > calls:
                    infer_ms = runner.latencies_ms[-1]
                reply = {"type": "action", "action": np.asarray(action, dtype=np.float32)}
        except Exception as error:  # noqa: BLE001 - a bad request or a failed policy call: reply, keep serving
            if isinstance(error, ValueError):  # the client's mistake (wire, contract): said to it, noted here
                log.info("bad request: %s", error)
                message = str(error)
            else:
                if not isinstance(error, ShuttingDown):
                    log.error("request failed", exc_info=error)
                message = f"{type(error).__name__}: {error}"
            return {"type": "error", "error": message}
        reply["timing"] = {"server_ms": (time.perf_counter() - received) * 1e3, "infer_ms": infer_ms}
        return reply


def health(connection: ServerConnection, request: Request) -> Response | None:
    """`GET /health` answers over plain HTTP (for probes and load balancers); other paths go on
    to the websocket handshake."""
    if request.path == "/health":
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


def stop_on_signals(server: PolicyServer) -> None:
    """SIGINT and SIGTERM ask `server` to stop after the running request; a second one stops the
    process at once (the operating system's default action), for a policy call or a shutdown that
    hangs: the first only sets a flag, which a main thread stuck in a kernel never reads."""

    def request_stop(signum: int, frame: Any) -> None:
        server.stop_requested = True
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, signal.SIG_DFL)
        log.info("stopping after the running request; %s again stops at once", signal.Signals(signum).name)

    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, request_stop)


def run_server(
    policy_path: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", seed: int = 0,
    noise_scale: float | None = None, steps: int | None = None, token: str | None = None, backend: str = "torch",
    threads: int = 0,
) -> None:
    """Serves until SIGINT or SIGTERM. `token` defaults to the MP1_SERVE_TOKEN environment variable;
    `threads` (0: torch's or onnxruntime's default) bounds the policy's CPU threads."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if backend == "onnx":
        # torch only exports the graph and checks the inputs in this process: one thread from the
        # start, so that no idle team of its spins on the cores onnxruntime uses (1024 points:
        # 7.0 -> 5.7 ms round trip); `threads` goes to onnxruntime
        torch.set_num_threads(1)
    server = PolicyServer(policy_path, device=device, seed=seed, noise_scale=noise_scale, steps=steps, token=token,
                          backend=backend, threads=threads)

    stop_on_signals(server)
    with serve(server.handle, host, port, max_size=MAX_FRAME_BYTES, compression=None, process_request=health,
               close_timeout=CLOSE_TIMEOUT_S, create_connection=server.new_connection) as websocket_server:
        connections = threading.Thread(target=websocket_server.serve_forever, daemon=True)
        connections.start()
        print(f"serving {server.metadata['policy']} ({policy_path}) on ws://{host}:{port}"
              f"{' (token required)' if token else ''}", flush=True)
        try:
            server.run_jobs()  # the policy runs here, on the main thread, until a stop is requested
        finally:
            stopping = threading.Thread(target=websocket_server.shutdown, kwargs={"reason": "the server is shutting down"})
            stopping.start()
            while stopping.is_alive():  # open connections get their closing handshake; opening ones are dropped
                server.drop_opening_connections()
                stopping.join(timeout=0.05)
