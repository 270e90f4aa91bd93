"""mp1 serve and PolicyClient: an episode through the server equals the in-process runner;
bad frames get error replies and the server keeps serving; a restart is survived."""

import signal
import socket
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from mp1.data.demos import DemoConfig, generate_demos
from mp1.policies.policy import read_policy_file
from mp1.runtime import PolicyRunner, load_policy
from mp1.serving import PolicyClient, PolicyServerError
from mp1.serving.wire import WireError, pack, unpack
from mp1.train import Trainer, parse_overrides

TINY = [
    "model.unet.down_dims=[16,32,64]", "model.unet.time_embed_dim=16", "model.encoder.point_hidden_dims=[16,32]",
    "batch_size=16", "threads=1", "demos=2", "video=false", "epochs=1", "eval_every=0", "final_eval_episodes=0",
]


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    generate_demos(["metaworld/button-press"], root / "demos", DemoConfig(episodes=2, steps_after_success=2))
    Trainer(parse_overrides(TINY + ["policy=mp1-tuned", f"data_dir={root / 'demos'}", f"run_dir={root / 'run'}"])).train()
    return root / "run" / "policy_latest.pt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(policy_file, port, *options):
    return subprocess.Popen([sys.executable, "-m", "mp1", "serve", str(policy_file), "--port", str(port), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def seconds_to_stop(process: subprocess.Popen, stop: signal.Signals = signal.SIGTERM) -> float:
    """Sends `stop` and times the exit; a server still there after 10 s is killed and the test
    fails with its log, which says how far the shutdown got."""
    process.send_signal(stop)
    start = time.monotonic()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the server did not stop within 10 s of {stop.name}; its log:\n{process.communicate()[1][-4000:]}")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server(policy_file):
    port = free_port()
    process = start_server(policy_file, port)
    PolicyClient(port=port, reconnect_s=60).close()  # serving before any test connects
    yield port
    process.kill()
    process.wait()


def test_wire_round_trip_and_refusals():
    message = {"obs": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False])}, "n": 3}
    back = unpack(pack(message))
    assert back["n"] == 3 and back["obs"]["a"].dtype == np.float32
    np.testing.assert_array_equal(back["obs"]["a"], message["obs"]["a"])
    for frame in (b"\xc1garbage", "text", msgpack.packb({"x": {"__ndarray__": True, "dtype": "|O", "shape": [1], "data": b"\0" * 8}}),
                  msgpack.packb({"x": {"__ndarray__": True, "dtype": "<f4", "shape": [3], "data": b"\0" * 8}})):
        with pytest.raises(WireError):
            unpack(frame)
    with pytest.raises(TypeError):
        pack({"x": np.array([object()])})


def test_episode_through_the_server_equals_the_in_process_runner(policy_file, server):
    from mp1.envs import make_env

    extra = read_policy_file(policy_file)["extra"]
    env = make_env(extra["task"], seed=0, **extra["observation"])
    runner = PolicyRunner(load_policy(policy_file), seed=0)
    with PolicyClient(port=server, reconnect_s=60) as client:
        assert client.metadata["policy"] == "mp1-tuned" and client.metadata["action_dim"] == 4
        assert client.metadata["observation"]["num_points"] == 512
        obs, _ = env.reset(seed=1000)
        client.reset(seed=0)  # this connection's noise from the runner's seed
        for _ in range(9):  # three chunks of three actions
            remote, local = client.act(obs), runner.act(obs)
            np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6)
            assert client.last_timing["server_ms"] >= client.last_timing["infer_ms"] >= 0
            obs, *_ = env.step(remote)
        chunk = client.act(obs, chunk=True)
        np.testing.assert_allclose(chunk, runner.plan(obs), rtol=1e-5, atol=1e-6)
        assert chunk.shape == (3, 4)
        client.reset()
        runner.reset()
    env.close()


@pytest.mark.parametrize("request_, problem", [
    ({"type": "fly"}, "expected a message"),
    ({"type": "act", "obs": {"agent_pos": np.zeros(9, np.float32)}}, "'obs.point_cloud' is missing"),
    ({"type": "act", "obs": {"point_cloud": np.zeros((512, 4), np.float32), "agent_pos": np.zeros(9, np.float32)}}, "has shape (512, 4)"),
    ({"type": "act", "obs": {"point_cloud": np.zeros((0, 3), np.float32), "agent_pos": np.zeros(9, np.float32)}}, "has shape (0, 3)"),
    ({"type": "act", "obs": {"point_cloud": np.zeros((512, 3), np.float32), "agent_pos": np.full(9, np.nan, np.float32)}}, "finite"),
])
def test_bad_frames_get_error_replies_and_the_server_keeps_serving(server, request_, problem):
    with connect(f"ws://127.0.0.1:{server}", open_timeout=60) as ws:
        unpack(ws.recv(timeout=30))  # metadata
        ws.send(b"\x00\xffnot msgpack")
        assert unpack(ws.recv(timeout=30))["type"] == "error"
        ws.send(pack(request_))
        reply = unpack(ws.recv(timeout=30))
        assert reply["type"] == "error" and problem in reply["error"], reply
        good = {"type": "act", "obs": {"point_cloud": np.random.rand(512, 3).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}}
        ws.send(pack(good))
        assert unpack(ws.recv(timeout=30))["action"].shape == (4,)


def test_client_that_vanishes_mid_request_costs_nothing(server):
    obs = {"point_cloud": np.random.rand(512, 3).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}
    for _ in range(3):
        with connect(f"ws://127.0.0.1:{server}", open_timeout=60) as ws:
            ws.recv(timeout=30)
            ws.send(pack({"type": "act", "obs": obs}))
            ws.socket.close()  # gone without a close handshake, before the reply
    with PolicyClient(port=server) as client:
        assert client.act(obs).shape == (4,)
        with pytest.raises(PolicyServerError, match="expected a message"):
            client._request({"type": "fly"})


def test_client_reconnects_after_a_server_restart(policy_file):
    port = free_port()
    obs = {"point_cloud": np.random.rand(512, 3).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}
    first = start_server(policy_file, port)
    try:
        client = PolicyClient(port=port, reconnect_s=60)
        client.act(obs)
        first.kill()
        first.wait()
        second = start_server(policy_file, port)
        try:
            assert client.act(obs).shape == (4,) and client.reconnects == 1
        finally:
            second.kill()
            second.wait()
        client.close()
    finally:
        first.kill()
    with pytest.raises(PolicyServerError, match="no policy server"):
        PolicyClient(port=port, reconnect_s=0.5)


def test_each_connection_has_its_own_noise_and_a_seeded_reset_replays_the_runner(policy_file, server):
    obs = {"point_cloud": np.random.default_rng(3).random((512, 3)).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}
    with PolicyClient(port=server) as first, PolicyClient(port=server) as second:
        assert not np.array_equal(first.act(obs), second.act(obs))  # connection seeds differ
        first.reset(seed=1234)
        runner = PolicyRunner(load_policy(policy_file), seed=1234)  # as mp1 eval runs the episode of env seed 1234
        for _ in range(4):
            np.testing.assert_allclose(first.act(obs), runner.act(obs), rtol=1e-5, atol=1e-6)
        with pytest.raises(PolicyServerError, match="'seed' must be a non-negative integer"):
            first._request({"type": "reset", "seed": -1})


def test_health_token_and_sigterm(policy_file):
    """/health answers over HTTP; a wrong or missing token is refused with a reason and nothing
    reaches the policy; SIGTERM stops the server within 2 s."""
    import os
    import urllib.request

    port = free_port()
    env = {**os.environ, "MP1_SERVE_TOKEN": "s3cret"}
    process = subprocess.Popen([sys.executable, "-m", "mp1", "serve", str(policy_file), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    assert response.status == 200 and response.read() == b"ok\n"
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the server did not come up"
                time.sleep(0.2)
        for token in (None, "wrong"):
            with pytest.raises(PolicyServerError, match="refused the connection: missing or wrong token"):
                PolicyClient(port=port, token=token or "", reconnect_s=0)
        obs = {"point_cloud": np.random.rand(512, 3).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}
        with PolicyClient(port=port, token="s3cret") as client:
            assert client.act(obs).shape == (4,)
        assert seconds_to_stop(process) < 2.0 and "server stopped" in process.stdout.read()
    finally:
        process.kill()
        process.wait()
    log = process.stderr.read()
    assert log.count("refused: missing or wrong token") == 2 and "Traceback" not in log


@pytest.mark.parametrize("peer", ["open", "opening"])
def test_a_silent_peer_does_not_hold_the_shutdown(policy_file, peer):
    """A peer that went silent must not keep SIGTERM from stopping the server within 2 s: one whose
    connection is open (it never answers the closing handshake), or one that connected and never
    sent its handshake request (a port scan, a half-open socket; websockets alone would wait 10 s)."""
    import base64
    import os

    port = free_port()
    process = start_server(policy_file, port)
    try:
        assert "serving" in process.stdout.readline()
        silent = socket.create_connection(("127.0.0.1", port))
        if peer == "open":
            key = base64.b64encode(os.urandom(16)).decode()
            silent.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            assert silent.recv(12) == b"HTTP/1.1 101"  # open; from here on it reads and answers nothing
        else:
            time.sleep(0.5)  # the server has accepted it and waits for its request
        assert seconds_to_stop(process) < 2.0
        silent.close()
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in process.stderr.read()


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_signal_during_inference_answers_every_client_and_stops_within_2_s(policy_file, stop):
    """Ctrl-C (SIGINT) or SIGTERM while three clients keep the policy busy: the server exits within
    2 s, and every client ends with a clear `PolicyServerError` (the refusal of its waiting request,
    or the closed connection), none hangs and no traceback is printed."""
    import threading

    port = free_port()
    process = start_server(policy_file, port, "--threads", "1")
    with PolicyClient(port=port, reconnect_s=120) as client:
        assert client.metadata["threads"] == 1
    obs = {"point_cloud": np.random.rand(512, 3).astype(np.float32), "agent_pos": np.zeros(9, np.float32)}
    endings: list[BaseException] = []
    served = threading.Semaphore(0)

    def busy_client() -> None:
        with PolicyClient(port=port, reconnect_s=0.5, timeout_s=10) as client:
            try:
                while True:
                    client.act(obs, chunk=True)
                    served.release()
            except BaseException as error:  # noqa: BLE001 - what ended it is the result
                endings.append(error)

    threads = [threading.Thread(target=busy_client) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(30):  # the policy is busy: requests are being answered and queued
            assert served.acquire(timeout=60)
        assert seconds_to_stop(process, getattr(signal, stop)) < 2.0
        for thread in threads:
            thread.join(timeout=15)
        assert not any(thread.is_alive() for thread in threads), "a client hangs"
    finally:
        process.kill()
        process.wait()
    assert len(endings) == 3 and all(isinstance(error, PolicyServerError) for error in endings), endings
    assert all("shutting down" in str(error) or "no policy server" in str(error) for error in endings), endings
    assert "server stopped" in process.stdout.read()
    assert "Traceback" not in process.stderr.read()


@pytest.mark.parametrize("first, second", [("SIGINT", "SIGINT"), ("SIGTERM", "SIGINT")])
def test_a_second_signal_stops_at_once(first, second):
    """The first signal only asks for a stop, which a main thread stuck in a policy call never
    reads (here: a 60 s sleep); the second ends the process at once."""
    child = subprocess.Popen([sys.executable, "-c", f"""
import os, signal, time, types
from mp1.serving.server import stop_on_signals
server = types.SimpleNamespace(stop_requested=False)
stop_on_signals(server)
os.kill(os.getpid(), signal.{first})
assert server.stop_requested
print("asked", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "asked", child.stderr.read()
        assert seconds_to_stop(child, getattr(signal, second)) < 2.0
        assert child.returncode == -getattr(signal, second)
    finally:
        child.kill()
        child.wait()


def test_streaming_client_asks_ahead_and_drops_the_steps_it_missed(policy_file, server):
    from mp1.serving import StreamingClient

    rng = np.random.default_rng(4)
    steps = [{"point_cloud": rng.random((512, 3)).astype(np.float32), "agent_pos": rng.random(9).astype(np.float32)}
             for _ in range(10)]
    # Asking only when the chunk is used up, it is the synchronous runner, action for action.
    runner = PolicyRunner(load_policy(policy_file), seed=21)
    with StreamingClient(PolicyClient(port=server), refill_at=0) as streaming:
        streaming.reset(seed=21)
        for obs in steps:
            np.testing.assert_allclose(streaming.act(obs), runner.act(obs), rtol=1e-5, atol=1e-6)
        assert len(streaming.wait_ms) == len(steps)
    # Asking ahead: after a step that did not wait, a request is on its way (at most refill_at = 2
    # actions were left); a step that waited took a whole new chunk, so it asks at the next one.
    with StreamingClient(PolicyClient(port=server), refill_at=2) as streaming:
        for obs in steps:
            action = streaming.act(obs)
            assert action.shape == (4,) and np.isfinite(action).all()
            assert streaming._request is not None or streaming.wait_ms[-1] > 0
    with pytest.raises(ValueError, match="refill_at must be in"):
        StreamingClient(PolicyClient(port=server), refill_at=3)
