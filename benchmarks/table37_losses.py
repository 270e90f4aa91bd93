"""Issue #22, item 5: what goes wrong where a policy loses a Meta-World task of the 37-task table.

Rolls out a run's policy (its policy_latest.pt must be on this machine) on its strict evaluation's
episodes (environment seeds 1000 on), and the scripted expert on the same seeds, recording per
episode what the simulator reports beside success:

* ``start``, ``closest``: the object-to-goal distance after the first step and the smallest of
  the episode, in cm (Meta-World's ``obj_to_target``);
* ``still``: the share of steps in which the hand moved less than 1 mm (hesitation);
* ``jerk``: the mean change of the action between steps (dithering shows here);
* ``steps``: the episode's length (up to the first success);
* ``grasped``: whether Meta-World's ``grasp_success`` (the task's own test of a hold, e.g.
  stick-push's stick touched and lifted 1 cm) was ever true; absent where the task reports none.

A failure is then ``untouched`` (the object never came 2 mm closer to its goal: the hand missed
it) or ``short`` (moved towards the goal, not far enough: a weak or misplaced push, a slipped
grasp), with the still share and jerk of failures against successes and the expert's, and how
many failures never held the object (``short`` can then be the object pushed without the hold the
task's success also needs). Writes
``<run>/eval/losses_seed1000_<N>ep.json`` and prints one summary line per run. With the inference
knobs of `mp1 eval` (``--noise-scale``, ``--steps``), the same policy sampled otherwise, into a file
named as `mp1 eval` names its (``..._steps2.json``): what a knob changes in how an episode fails.

    python benchmarks/table37_losses.py RUN [RUN ...] [--episodes 50] [--noise-scale S] [--steps K]
    python benchmarks/table37_losses.py --lost-in DIR [--over 15]

``--lost-in`` takes, instead of named runs, both runs of every Meta-World task under DIR that
mp1-tuned loses to DP3 by more than ``--over`` points and that have no analysis yet: table37.sh
calls it after each task, so the analysis is made while the policy files are on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mp1 import jsonio
from mp1.envs import make_env
from mp1.evaluate import DP3_EPISODE_STEPS
from mp1.policies import Policy
from mp1.policies.policy import read_policy_file
from mp1.report import collect_runs, knob_settings, knob_suffix, strict_gaps
from mp1.runtime import PolicyRunner

FIRST_SEED = 1000
STILL_METRES = 0.001
MOVED_CM = 0.2


def episode(env, act, seed: int, reset) -> dict:
    """One episode until its first success or the step limit, as the strict evaluation runs it."""
    obs, _ = env.reset(seed=seed)
    reset(seed)
    hand, actions = [], []
    start, closest, success, steps, grasped = None, np.inf, False, 0, None
    while not success:
        action = act(obs)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        hand.append(np.asarray(obs["agent_pos"][:3], dtype=np.float64))
        actions.append(np.asarray(action, dtype=np.float64))
        start = float(info["obj_to_target"]) if start is None else start
        closest = min(closest, float(info["obj_to_target"]))
        if "grasp_success" in info:
            grasped = bool(grasped) or bool(info["grasp_success"])
        success = bool(info["success"])
        if terminated or truncated:
            break
    moves = np.linalg.norm(np.diff(np.stack(hand), axis=0), axis=1)
    jerk = np.linalg.norm(np.diff(np.stack(actions), axis=0), axis=1)
    return {"seed": seed, "success": success, "steps": steps, "start_cm": 100 * start, "closest_cm": 100 * closest,
            "still": float(np.mean(moves < STILL_METRES)) if moves.size else 0.0,
            "jerk": float(np.mean(jerk)) if jerk.size else 0.0, **({} if grasped is None else {"grasped": grasped})}


def summary(episodes: list[dict]) -> dict:
    failures = [e for e in episodes if not e["success"]]
    successes = [e for e in episodes if e["success"]]
    median = lambda group, key: float(np.median([e[key] for e in group])) if group else None
    return {
        "success": len(successes) / len(episodes),
        "untouched": sum(e["start_cm"] - e["closest_cm"] < MOVED_CM for e in failures),
        "short": sum(e["start_cm"] - e["closest_cm"] >= MOVED_CM for e in failures),
        "never_grasped": sum(not e["grasped"] for e in failures) if all("grasped" in e for e in episodes) else None,
        "closest_cm_of_failures_median": median(failures, "closest_cm"),
        "steps_of_successes_median": median(successes, "steps"),
        **{f"{key}_median_{name}": median(group, key) for key in ("still", "jerk")
           for name, group in (("successes", successes), ("failures", failures))},
    }


def line(name: str, s: dict) -> str:
    show = lambda value, form: "-" if value is None else format(value, form)
    return (f"{name:<48} success {100 * s['success']:5.1f}%  failures: untouched {s['untouched']:2d}, short {s['short']:2d} "
            f"(closest {show(s['closest_cm_of_failures_median'], '.1f')} cm, never grasped "
            f"{show(s.get('never_grasped'), 'd')})  success steps "
            f"{show(s['steps_of_successes_median'], '.0f')}  still {show(s['still_median_successes'], '.2f')} / "
            f"{show(s['still_median_failures'], '.2f')}  jerk {show(s['jerk_median_successes'], '.3f')} / "
            f"{show(s['jerk_median_failures'], '.3f')} (successes / failures)")


def result_path(run: Path, episodes: int, sampling: dict | None = None) -> Path:
    return run / "eval" / f"losses_seed{FIRST_SEED}_{episodes}ep{knob_suffix(sampling or {})}.json"


def lost_runs(root: Path, over: float, episodes: int) -> list[Path]:
    """Both runs of each Meta-World task under `root` that mp1-tuned loses to DP3 by more than
    `over` points, less those analysed already; a run whose policy file has left with its machine
    is named and skipped."""
    rows = collect_runs(root)
    runs = []
    for task, mine, theirs in strict_gaps(rows, over, ("mp1-tuned", "dp3")):
        if not task.startswith("metaworld/") or mine > theirs:
            continue
        for run in (Path(r["run"]) for r in rows if r["task"] == task and r["policy"] in ("mp1-tuned", "dp3")):
            if result_path(run, episodes).exists():
                continue
            if (run / "policy_latest.pt").exists():
                runs.append(run)
            else:
                print(f"[losses] {run}: no analysis and no policy file (it left with a machine)", file=sys.stderr)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--lost-in", type=Path, metavar="DIR", help="instead of RUNs: the lost tasks' runs under DIR")
    parser.add_argument("--over", type=float, default=15.0, help="with --lost-in: the margin in points (default 15)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--noise-scale", type=float, help="sample with the initial noise scaled (as mp1 eval)")
    parser.add_argument("--steps", type=int, help="sample with this many steps (as mp1 eval)")
    args = parser.parse_args()
    if bool(args.runs) == bool(args.lost_in):
        parser.error("name the runs, or give --lost-in DIR: one of the two")
    sampling = {"noise_scale": args.noise_scale, "steps": args.steps}
    runs = lost_runs(args.lost_in, args.over, args.episodes) if args.lost_in else args.runs
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.episodes))
    experts: dict[str, dict] = {}
    for run in runs:
        payload = read_policy_file(run / "policy_latest.pt")
        extra = payload["extra"]
        task = extra["task"]
        if not task.startswith("metaworld/"):
            raise SystemExit(f"{run}: {task} is not a Meta-World task (this script reads Meta-World's info)")
        # The environment as `mp1 eval` makes it: the training data's observation, DP3's episode length.
        env = make_env(task, seed=seeds[0], **extra.get("observation", {}), max_episode_steps=DP3_EPISODE_STEPS)
        try:
            policy = Policy.from_payload(payload, source=str(run / "policy_latest.pt")).set_sampling(**sampling)
            runner = PolicyRunner(policy)
            episodes = [episode(env, runner.act, seed, lambda s: runner.reset(seed=s)) for seed in seeds]
            if task not in experts:
                expert = [episode(env, lambda _obs: env.expert_action(), seed, lambda _s: None) for seed in seeds]
                experts[task] = summary(expert)
                print(line(f"{task} expert", experts[task]), flush=True)
        finally:
            env.close()
        result = {"task": task, "sampling": sampling, "episodes": episodes, "summary": summary(episodes),
                  "expert": experts[task]}
        jsonio.write(result_path(run, args.episodes, sampling), result, indent=1)  # whole: --lost-in skips what exists
        print(line(" ".join([str(run), *knob_settings(sampling)]), result["summary"]), flush=True)


if __name__ == "__main__":
    main()
