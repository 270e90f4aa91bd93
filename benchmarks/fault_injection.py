"""Fault injection: kill -9 at random points of `mp1 train`, `mp1 demos` and `mp1 sweep`, damage
stores, policy files and checkpoints at random, plant hostile files, start second writers; then
check what a user would see. Every fault ends in one of:

- recovered: the same command run again finished, nothing lost or doubled;
- refused clearly: one `mp1: error:` line (CLI) or the typed exception (library), no traceback;
- unaffected: the damage hit bytes the file does not depend on, and what was read equals the original;
- FAILED: silent corruption, a traceback, a lost finished result or code executed from a file.

Bounded (tiny networks, 2-episode stores, every process under a timeout), local files only.
Usage: python benchmarks/fault_injection.py [--faults 60] [--seed 0] [--out benchmarks/results/fault_injection]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

TINY = ["model.unet.down_dims=[16,32,64]", "model.unet.time_embed_dim=16", "model.encoder.point_hidden_dims=[16,32]",
        "batch_size=16", "threads=1", "demos=2", "video=false", "checkpoint_every=1", "eval_every=0",
        "eval_max_steps=10"]
TIMEOUT_S = 300


def mp1(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mp1", *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mp1", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_after(process: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL after `seconds` unless it ended first; True if it was killed."""
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def clear_error(result: subprocess.CompletedProcess) -> bool:
    """A refusal the way a user should get it: non-zero exit, `mp1: error:`, no traceback."""
    return result.returncode != 0 and "mp1: error:" in result.stderr and "Traceback" not in result.stderr


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


class Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class Faults:
    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng = root, rng
        self.demos = root / "demos"
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{self.count:03d}-{name}"
        path.mkdir()
        return path

    def train_args(self, run: Path, epochs: int = 3, *extra: str) -> list[str]:
        return ["train", *TINY, f"data_dir={self.demos}", f"run_dir={run}", f"epochs={epochs}", "final_eval_episodes=1", *extra]

    # --- kill -9 ----------------------------------------------------------------------------

    def kill_train(self) -> tuple[str, str]:
        work = self.fresh("kill-train")
        run = work / "run"
        delay = self.rng.uniform(2.0, 12.0)
        if not kill_after(start(*self.train_args(run, 4), cwd=work), delay):
            return "recovered", f"finished before the kill at {delay:.1f} s"
        result = mp1(*self.train_args(run, 4), cwd=work)
        if result.returncode != 0:
            return "FAILED", f"resume failed: {result.stderr[-300:]}"
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["kind"] == "train"]
        final = json.loads((run / "final.json").read_text())
        if steps != list(range(1, final["steps"] + 1)) or leftovers(run):
            return "FAILED", f"metrics steps {steps[:3]}..{steps[-3:]} / {final['steps']}, leftovers {leftovers(run)}"
        return "recovered", f"killed at {delay:.1f} s, resumed to step {final['steps']}"

    def kill_demos(self) -> tuple[str, str]:
        work = self.fresh("kill-demos")
        store = work / "demos.zarr"
        delay = self.rng.uniform(0.5, 6.0)
        killed = kill_after(start("demos", "metaworld/reach", "--episodes", "2", "--out", str(store), cwd=work), delay)
        result = mp1("demos", "metaworld/reach", "--episodes", "2", "--out", str(store), cwd=work)
        if result.returncode != 0:
            return "FAILED", f"rerun failed: {result.stderr[-300:]}"
        from mp1.data.store import load_store

        if load_store(store).num_episodes != 2 or leftovers(work):
            return "FAILED", f"store episodes or leftovers {leftovers(work)}"
        when = f"killed at {delay:.1f} s" if killed else f"finished before the kill at {delay:.1f} s"
        return "recovered", f"{when}; the rerun left a complete 2-episode store"

    def kill_sweep(self) -> tuple[str, str]:
        work = self.fresh("kill-sweep")
        args = ["sweep", *TINY, "epochs=2", "final_eval_episodes=1", f"data_dir={self.demos}", "seed=0,1",
                "task=metaworld/button-press", "--dir", str(work / "sweep"), "--jobs", "1"]
        delay = self.rng.uniform(3.0, 25.0)
        kill_after(start(*args, cwd=work), delay)
        finished_before = {p.parent for p in (work / "sweep").rglob("final.json")}
        result = mp1(*args, cwd=work)
        finished_after = {p.parent for p in (work / "sweep").rglob("final.json")}
        if result.returncode != 0:
            return "FAILED", f"rerun failed: {result.stderr[-300:]}"
        if not finished_before <= finished_after or len(finished_after) != 2 or not (work / "sweep" / "report.md").exists():
            return "FAILED", f"finished runs {len(finished_before)} -> {len(finished_after)}"
        return "recovered", f"killed at {delay:.1f} s with {len(finished_before)} of 2 runs finished; rerun completed"

    # --- damage -----------------------------------------------------------------------------

    def damage(self, data: bytes) -> tuple[bytes, str]:
        kind = self.rng.choice(["flip", "truncate", "zero"])
        raw = bytearray(data)
        if kind == "truncate":
            cut = self.rng.randrange(0, len(raw))
            return bytes(raw[:cut]), f"truncated to {cut} of {len(raw)} bytes"
        start = self.rng.randrange(0, len(raw))
        length = self.rng.choice([1, 8, 64])
        for i in range(start, min(start + length, len(raw))):
            raw[i] = raw[i] ^ 0xFF if kind == "flip" else 0
        return bytes(raw), f"{kind} {length} bytes at {start} of {len(raw)}"

    def corrupt_store(self, pristine: Path) -> tuple[str, str]:
        from mp1.data.store import StoreError, load_store

        work = self.fresh("corrupt-store")
        store = work / "demos.zarr"
        shutil.copytree(pristine, store)
        chunks = [p for p in (store / "data").rglob("*") if p.is_file() and p.name != "zarr.json"]
        chunk = self.rng.choice(chunks)
        if self.rng.random() < 0.25:
            chunk.unlink()
            what = f"deleted {chunk.relative_to(store)}"
        else:
            data, what = self.damage(chunk.read_bytes())
            chunk.write_bytes(data)
            what = f"{chunk.relative_to(store)}: {what}"
        try:
            damaged = load_store(store)
        except StoreError as error:
            return "refused clearly", f"{what} -> {str(error)[:120]}"
        except Exception as error:  # noqa: BLE001 - anything else is a finding
            return "FAILED", f"{what} -> {type(error).__name__}: {error}"
        original = load_store(pristine)
        same = all(np.array_equal(damaged.arrays[k], original.arrays[k]) for k in original.arrays)
        return ("unaffected", what) if same else ("FAILED", f"{what} -> silent corruption")

    def corrupt_policy(self, pristine: Path) -> tuple[str, str]:
        from mp1.policies import Policy, PolicyFileError

        work = self.fresh("corrupt-policy")
        path = work / "policy.pt"
        data, what = self.damage(pristine.read_bytes())
        path.write_bytes(data)
        try:
            damaged = Policy.load(path)
        except PolicyFileError as error:
            return "refused clearly", f"{what} -> {str(error)[:120]}"
        except Exception as error:  # noqa: BLE001
            return "FAILED", f"{what} -> {type(error).__name__}: {error}"
        original = Policy.load(pristine).state_dict()
        same = all(torch.equal(v, original[k]) for k, v in damaged.state_dict().items())
        return ("unaffected", what) if same else ("FAILED", f"{what} -> silent corruption")

    def corrupt_checkpoint(self, pristine_run: Path) -> tuple[str, str]:
        work = self.fresh("corrupt-checkpoint")
        run = work / "run"
        shutil.copytree(pristine_run, run)
        checkpoint = run / "checkpoints" / "latest.pt"
        data, what = self.damage(checkpoint.read_bytes())
        checkpoint.write_bytes(data)
        result = mp1(*self.train_args(run, 3), cwd=work)
        if clear_error(result):
            return "refused clearly", f"{what} -> {result.stderr.strip().splitlines()[-1][:120]}"
        if result.returncode == 0:
            return "unaffected", f"{what}: resumed and finished"
        return "FAILED", f"{what} -> {result.stderr[-300:]}"

    # --- hostile files and second writers ----------------------------------------------------

    def hostile_file(self, pristine_run: Path) -> tuple[str, str]:
        work = self.fresh("hostile")
        marker = work / "code-ran"
        if self.rng.random() < 0.5:
            run = work / "run"
            shutil.copytree(pristine_run, run)
            torch.save({"config": Hostile(marker)}, run / "checkpoints" / "latest.pt")
            result, what = mp1(*self.train_args(run, 3), cwd=work), "checkpoint resumed by mp1 train"
        else:
            (work / "policy.pt").write_bytes(pickle.dumps({"format": "mp1-policy", "payload": Hostile(marker)}))
            result, what = mp1("eval", str(work / "policy.pt"), "--episodes", "1", cwd=work), "policy file given to mp1 eval"
        if marker.exists():
            return "FAILED", f"{what}: code executed"
        return ("refused clearly", what) if clear_error(result) else ("FAILED", f"{what}: {result.stderr[-300:]}")

    def second_writer(self) -> tuple[str, str]:
        work = self.fresh("second-writer")
        if self.rng.random() < 0.5:
            args, what = self.train_args(work / "run", 30), "mp1 train"
        else:
            args = ["sweep", *TINY, "epochs=30", "final_eval_episodes=1", f"data_dir={self.demos}",
                    "task=metaworld/button-press", "--dir", str(work / "sweep")]
            what = "mp1 sweep"
        first = start(*args, cwd=work)
        lock = work / ("run" if what == "mp1 train" else "sweep") / ".lock"
        deadline = time.time() + 60
        while not (lock.exists() and lock.stat().st_size) and time.time() < deadline:
            time.sleep(0.1)
        second = mp1(*args, cwd=work)
        first.send_signal(signal.SIGKILL)
        first.wait()
        if clear_error(second) and "in use by PID" in second.stderr:
            return "refused clearly", f"second {what}: {second.stderr.strip()[:140]}"
        return "FAILED", f"second {what} rc={second.returncode}: {second.stderr[-300:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/fault_injection")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="mp1-faults-"))
    faults = Faults(root, rng)
    started = time.time()
    try:
        setup = mp1("demos", "metaworld/button-press", "--episodes", "2", "--out-dir", str(faults.demos), cwd=root)
        assert setup.returncode == 0, setup.stderr
        store = next(faults.demos.glob("*.zarr"))
        reference = root / "reference"
        done = mp1(*faults.train_args(reference, 2), cwd=root)
        assert done.returncode == 0, done.stderr
        kinds = {
            "kill -9 train": faults.kill_train, "kill -9 demos": faults.kill_demos, "kill -9 sweep": faults.kill_sweep,
            "corrupt store": lambda: faults.corrupt_store(store),
            "corrupt policy file": lambda: faults.corrupt_policy(reference / "policy_latest.pt"),
            "corrupt checkpoint": lambda: faults.corrupt_checkpoint(reference),
            "hostile file": lambda: faults.hostile_file(reference), "second writer": faults.second_writer,
        }
        # Cheap faults more often than the slow kill -9 of whole sweeps.
        weights = {"kill -9 train": 2, "kill -9 demos": 1, "kill -9 sweep": 1, "corrupt store": 3,
                   "corrupt policy file": 3, "corrupt checkpoint": 2, "hostile file": 1, "second writer": 1}
        plan = list(kinds) + rng.choices(list(weights), list(weights.values()), k=max(0, args.faults - len(kinds)))
        records = []
        for i, kind in enumerate(plan, 1):
            outcome, detail = kinds[kind]()
            records.append({"fault": i, "kind": kind, "outcome": outcome, "detail": detail})
            print(f"[{i:3d}/{len(plan)}] {kind:<20} {outcome:<16} {detail}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by_kind = defaultdict(Counter)
    for record in records:
        by_kind[record["kind"]][record["outcome"]] += 1
    outcomes = ["recovered", "refused clearly", "unaffected", "FAILED"]
    lines = [f"# Fault injection: {len(records)} faults, seed {args.seed}, {time.time() - started:.0f} s", "",
             "| fault | " + " | ".join(outcomes) + " |", "|" + " --- |" * (1 + len(outcomes))]
    lines += [f"| {kind} | " + " | ".join(str(counts[o]) for o in outcomes) + " |" for kind, counts in by_kind.items()]
    total = Counter(r["outcome"] for r in records)
    lines += ["| **all** | " + " | ".join(str(total[o]) for o in outcomes) + " |", ""]
    failures = [f"- {r['kind']}: {r['detail']}" for r in records if r["outcome"] == "FAILED"]
    lines += ["Failures:", *failures] if failures else ["Failures: none."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(records, indent=1))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if total["FAILED"] else 0)


if __name__ == "__main__":
    main()
