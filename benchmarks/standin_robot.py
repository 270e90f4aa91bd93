"""Issue #24's proof on a stand-in robot: a simulated Meta-World arm plays the robot. A policy
trained on the arm's recorded demonstrations (`benchmarks/standin.sh`: the recording API, a bag or
HDF5, trained with no simulator) is served with `mp1 serve`; the arm is driven at a fixed control
rate through `StreamingClient`, sending each step's raw depth frame (uint16 millimetres, as a
depth camera gives it) and its state, and never the cloud: the server makes the cloud from the
calibration the policy file records. Measured:

* strict success over fixed-seed episodes, beside in-process evaluation of the same policy file
  on the same seeds (`mp1.evaluate`, the env making the cloud with the same pipeline): target
  within 5 points;
* the time the control loop waited for actions (target 0 ms p50 at 20 Hz), and the steps whose
  loop overran the control period (simulation and rendering included).

    python benchmarks/standin_robot.py RUN --task metaworld/button-press [--episodes 100] [--rate 20]
        [--refill-at 1] [--backend torch] [--out benchmarks/results/standin_robot]

Each episode resets the server's noise with its seed, as `mp1 eval` does, so the two differ only
by the path: depth in millimetres, the wire, and the streamed chunks (a chunk asked for ahead of
time starts from an older observation, and its stale front is dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mp1.envs import make_env
from mp1.evaluate import DP3_EPISODE_STEPS, evaluate, wilson_interval
from mp1.policies.policy import read_policy_file
from mp1.progress import progress_bar
from mp1.serving import PolicyClient, StreamingClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def millimetres(depth: np.ndarray) -> np.ndarray:
    """A float depth frame in metres as a depth camera sends it: uint16 millimetres, 0 = no reading."""
    return np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)


def served_episodes(stream: StreamingClient, task: str, seeds: list[int], rate_hz: float, observation: dict) -> dict:
    """Drives the arm at `rate_hz`: one `stream.act` per control step, then the simulator's step,
    then a sleep to the next tick."""
    env = make_env(task, seed=seeds[0], max_episode_steps=DP3_EPISODE_STEPS, render_depth=True, **observation)
    period = 1.0 / rate_hz
    successes, lengths, overruns, env_ms = [], [], 0, []
    try:
        with progress_bar(total=len(seeds), unit="episode", desc=f"served {task}") as bar:
            for seed in seeds:
                obs, _ = env.reset(seed=seed)
                stream.reset(seed=seed)
                solved, steps, tick = False, 0, time.perf_counter()
                while not solved and steps < DP3_EPISODE_STEPS:
                    action = stream.act({"depth": millimetres(obs["depth"]), "agent_pos": obs["agent_pos"]})
                    started = time.perf_counter()
                    obs, _, _, _, info = env.step(action)
                    env_ms.append((time.perf_counter() - started) * 1e3)
                    solved, steps = bool(info["success"]), steps + 1
                    tick += period
                    late = time.perf_counter() - tick
                    if late > 0:
                        overruns += 1
                        tick += late  # a late step moves the clock on: the arm never catches up in a burst
                    else:
                        time.sleep(-late)
                successes.append(solved)
                lengths.append(steps)
                bar.update(1)
    finally:
        env.close()
    waits = np.asarray(stream.wait_ms)
    return {
        "successes": successes, "lengths": lengths, "steps": int(waits.size), "overrun_steps": overruns,
        "wait_ms_p50": float(np.median(waits)), "wait_ms_p90": float(np.percentile(waits, 90)),
        "wait_ms_p99": float(np.percentile(waits, 99)), "wait_ms_max": float(waits.max()),
        "steps_that_waited": int((waits > 0).sum()),
        "env_step_ms_p50": float(np.median(env_ms)), "env_step_ms_p90": float(np.percentile(env_ms, 90)),
    }


def in_process(policy_file: Path, task: str, seeds: list[int], observation: dict) -> dict:
    """`mp1 eval`'s strict result for this policy file and these seeds: read from the run's
    `eval/` folder when `mp1 eval` saved it (benchmarks/standin.sh does), else evaluated here."""
    saved = policy_file.parent / "eval" / f"eval_seed{seeds[0]}_{len(seeds)}ep.json"
    if saved.exists():
        result = json.loads(saved.read_text())
        if result.get("env") == task and Path(result["policy_file"]).resolve() == policy_file.resolve():
            successes = [episode["success"] for episode in result["per_episode"]]
            return {"successes": successes, "success_rate": result["success_rate"], "latency_p50_ms": result["latency_p50_ms"],
                    "source": str(saved)}
    result = evaluate(str(policy_file), task, len(seeds), seeds[0], observation=observation)
    return {"successes": result.successes, "success_rate": result.success_rate, "latency_p50_ms": result.latency_p50_ms,
            "source": "evaluated by this script"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (its policy_latest.pt, as `mp1 eval` takes) or a policy file")
    parser.add_argument("--task", required=True, help="the simulator that plays the robot")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1000, help="first env seed (mp1 eval's default)")
    parser.add_argument("--rate", type=float, default=20.0, help="control rate, Hz")
    parser.add_argument("--refill-at", type=int, default=1, help="StreamingClient: ask for the next chunk with this many actions left")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--server-threads", type=int, default=1,
                        help="mp1 serve --threads: the robot's loop and the server share this machine's cores")
    parser.add_argument("--out", default="benchmarks/results/standin_robot")
    args = parser.parse_args()

    run = Path(args.run)
    policy_file = run / "policy_latest.pt" if run.is_dir() else run
    extra = read_policy_file(policy_file)["extra"]
    observation = extra.get("observation") or {}
    if not (extra.get("pipeline") and observation.get("cloud_pipeline")):
        raise SystemExit(f"{policy_file} records no cloud pipeline: train it on a recorded store (benchmarks/standin.sh)")
    seeds = [args.seed + i for i in range(args.episodes)]
    results: dict = {"policy_file": str(policy_file), "task": args.task, "episodes": args.episodes, "seed": args.seed,
                     "rate_hz": args.rate, "refill_at": args.refill_at, "backend": args.backend,
                     "server_threads": args.server_threads,
                     "load_average_at_start": os.getloadavg()}

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mp1", "serve", str(policy_file), "--port", str(port),
                               "--backend", args.backend, "--threads", str(args.server_threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with StreamingClient(PolicyClient(port=port, reconnect_s=180), refill_at=args.refill_at) as stream:
            served = served_episodes(stream, args.task, seeds, args.rate, observation)
    finally:
        server.terminate()
        server.wait(timeout=30)
    results["in_process"] = in_process(policy_file, args.task, seeds, observation)
    results["in_process"]["ci95"] = wilson_interval(sum(results["in_process"]["successes"]), args.episodes)

    served_rate, local_rate = float(np.mean(served["successes"])), results["in_process"]["success_rate"]
    results["served"] = {**served, "success_rate": served_rate,
                         "ci95": wilson_interval(sum(served["successes"]), args.episodes)}
    results["difference_points"] = 100 * (served_rate - local_rate)
    results["same_outcome_episodes"] = int(sum(a == b for a, b in zip(served["successes"], results["in_process"]["successes"])))
    results["load_average_at_end"] = os.getloadavg()
    print(f"{args.task}: served through raw depth at {args.rate:g} Hz {100 * served_rate:.1f}%, in process "
          f"{100 * local_rate:.1f}% ({results['difference_points']:+.1f} points; target within 5); waiting for actions "
          f"p50 {served['wait_ms_p50']:.1f} ms, p99 {served['wait_ms_p99']:.1f} ms, {served['steps_that_waited']} of "
          f"{served['steps']} steps waited (target 0 ms p50); {served['overrun_steps']} steps overran the period "
          f"(simulator step with rendering p50 {served['env_step_ms_p50']:.1f} ms)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.task.replace('/', '_')}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
