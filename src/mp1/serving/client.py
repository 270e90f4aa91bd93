"""The robot's side of `mp1 serve`: `PolicyClient(host, port).act(obs)`. Needs numpy, msgpack
and websockets only (no torch, no mp1 model code)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from mp1.serving.wire import FRAME_KEYS, pack, unpack


def frames(value: Any) -> np.ndarray | list[np.ndarray]:
    return [np.asarray(frame) for frame in value] if isinstance(value, (list, tuple)) else np.asarray(value)


class PolicyServerError(RuntimeError):
    """The server refused a request (the message says why) or cannot be reached."""


class PolicyClient:
    """One episode at a time against a policy server. `metadata` describes the policy
    (observation shapes, action dimension, control settings); `last_timing` holds the
    server's timing of the last reply. If the connection drops (a server restart), the next
    request reconnects for up to `reconnect_s` seconds; the server then holds a fresh runner,
    so the observation history restarts as after `reset()`. `token` (default: the
    MP1_SERVE_TOKEN environment variable) is sent to a server that requires one."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8000, timeout_s: float = 30.0, reconnect_s: float = 10.0,
        token: str | None = None,
    ):
        self.url = f"ws://{host}:{port}"
        self.timeout_s, self.reconnect_s = timeout_s, reconnect_s
        token = token if token is not None else os.environ.get("MP1_SERVE_TOKEN") or None
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self.metadata: dict[str, Any] = {}
        self.last_timing: dict[str, float] = {}
        self.reconnects = 0
        self._connection: ClientConnection | None = None
        self._open = contextlib.ExitStack()  # websockets wants its connections used as context managers
        self._connect()

    def act(self, obs: dict[str, np.ndarray], chunk: bool = False) -> np.ndarray:
        """The next action (Da,) for this observation step `{"point_cloud": (N, C), "agent_pos":
        (Ds,)}`, or with raw frames `{"depth": (H, W) uint16 mm or float32 m, one per camera,
        "colour": ..., "camera_poses": ..., "agent_pos": ...}` for a policy that records its cloud
        pipeline (`metadata["pipeline"]`); with `chunk=True` a whole new chunk (n_action_steps, Da)."""
        obs = {key: frames(value) if key in FRAME_KEYS else np.asarray(value, dtype=np.float32) for key, value in obs.items()}
        return self._request({"type": "act", "obs": obs, "chunk": chunk})["action"].copy()  # writable

    def reset(self, seed: int | None = None) -> None:
        """Starts a new episode: the server forgets the observation history and pending actions,
        and with a `seed` restarts the sampling noise from it (as `mp1 eval` does per episode)."""
        self._request({"type": "reset"} if seed is None else {"type": "reset", "seed": int(seed)})

    def close(self) -> None:
        self._open.close()
        self._connection = None

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> None:
        deadline = time.monotonic() + self.reconnect_s
        while True:
            try:
                self._connection = self._open.enter_context(
                    connect(self.url, open_timeout=self.timeout_s, max_size=None, compression=None,
                            additional_headers=self._headers)
                )
                self.metadata = unpack(self._connection.recv(timeout=self.timeout_s))
                return
            except (OSError, ConnectionClosed) as error:  # TimeoutError included
                self.close()  # a half-opened connection is not kept
                refused = isinstance(error, ConnectionClosed) and error.rcvd and error.rcvd.code == CloseCode.POLICY_VIOLATION
                if refused:  # retrying cannot help
                    raise PolicyServerError(f"{self.url} refused the connection: {error.rcvd.reason}") from None
                if time.monotonic() > deadline:
                    raise PolicyServerError(f"no policy server at {self.url} ({error})") from None
                time.sleep(0.2)

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        frame = pack(message)
        try:
            reply = self._exchange(frame)
        except TimeoutError:  # a slow server is not a lost one: resending would reset its runner
            raise PolicyServerError(f"no reply from {self.url} within {self.timeout_s} s") from None
        except (OSError, ConnectionClosed):  # the server went away: reconnect once, with a fresh runner
            self.close()
            self._connect()
            self.reconnects += 1
            try:
                reply = self._exchange(frame)
            except (OSError, ConnectionClosed) as error:  # TimeoutError included: one retry, then a clear error
                self.close()
                raise PolicyServerError(f"{self.url} failed again after reconnecting ({type(error).__name__}: {error})") from None
        if reply.get("type") == "error":
            raise PolicyServerError(reply.get("error", "unknown error"))
        self.last_timing = reply.get("timing", {})
        return reply

    def _exchange(self, frame: bytes) -> dict[str, Any]:
        if self._connection is None:
            self._connect()
        self._connection.send(frame)
        return unpack(self._connection.recv(timeout=self.timeout_s))


class StreamingClient:
    """Hides inference latency from a robot's control loop, as LeRobot's asynchronous inference
    does: `act(obs)` is called once per control step and returns at once with the next action of
    the current chunk, while the next chunk is asked for in the background as soon as `refill_at`
    actions (or fewer) remain. A chunk computed from the observation of step k begins at step k;
    the steps executed while it was on its way are dropped from its front. The loop waits only
    when the current chunk runs out before the next arrives; `wait_ms` records every wait (0 when
    none). The client keeps the observation history itself and sends it with each request
    (`{"type": "plan"}`), so the server's runner never sees an incomplete history."""

    def __init__(self, client: PolicyClient, refill_at: int = 1):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        n_action_steps = client.metadata["n_action_steps"]
        if not 0 <= refill_at < n_action_steps:
            raise ValueError(f"refill_at must be in [0, {n_action_steps - 1}] (the chunk holds {n_action_steps} actions)")
        self.client, self.refill_at = client, refill_at
        self.history: deque[dict[str, Any]] = deque(maxlen=client.metadata["n_obs_steps"])
        self.queue: deque[np.ndarray] = deque()
        self.wait_ms: list[float] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp1-stream")  # one request at a time
        self._request = None  # (future, step it was asked at)
        self._step = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.history.append({key: frames(value) if key in FRAME_KEYS else np.array(value, dtype=np.float32)
                             for key, value in obs.items()})
        if self._request is not None and self._request[0].done():
            self._take()
        if self._request is None and len(self.queue) <= self.refill_at:
            history = list(self.history)
            self._request = (self._worker.submit(lambda: self.client._request({"type": "plan", "history": history})), self._step)
        if not self.queue:
            start = time.perf_counter()
            self._take()
            self.wait_ms.append((time.perf_counter() - start) * 1e3)
        else:
            self.wait_ms.append(0.0)
        self._step += 1
        return self.queue.popleft()

    def _take(self) -> None:
        """Waits for the chunk on its way and makes it the current one, less its stale steps."""
        future, asked_at = self._request
        self._request = None
        chunk = future.result()["action"]  # PolicyServerError and kin reach the control loop here
        self.queue.clear()
        self.queue.extend(chunk[self._step - asked_at :].copy())
        if not self.queue:  # it arrived too late to be of use: ask again now and wait for that one
            history = list(self.history)
            self._request = (self._worker.submit(lambda: self.client._request({"type": "plan", "history": history})), self._step)
            self._take()

    def reset(self, seed: int | None = None) -> None:
        """A new episode: waits out a request on its way, then resets the server's noise."""
        if self._request is not None:
            self._request[0].result()
            self._request = None
        self.history.clear()
        self.queue.clear()
        self._step = 0
        self.client.reset(seed)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.client.close()

    def __enter__(self) -> "StreamingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
