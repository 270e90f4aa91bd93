"""Sweeps over methods × tasks × seeds × demo counts, or any other training setting.

`mp1 sweep policy=mp1,flowpolicy,dp3 task=cpu-suite seed=0,1 --jobs 2` takes `mp1 train`'s
overrides, where comma-separated values are swept as a cartesian product and `task` may name
task sets. Every combination is checked before anything runs, the demos are generated once per
task, and the runs are handed to an existing launcher: joblib's process pool on this machine,
submitit on SLURM. A run's folder is a function of its settings, so running the same command
again skips finished runs (final.json present) and resumes interrupted ones from their last
checkpoint. The report over all runs is written at the end; a call that finds every run finished
leaves an existing report as it is (`mp1 report` remakes it), so that a long plan that calls the
sweep task by task skips finished tasks in seconds.
"""

from __future__ import annotations

import itertools
import os
import traceback
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from mp1.lock import FolderLock
from mp1.train import DEFAULT_TASK, TrainConfig, parse_overrides

LAUNCHERS = ("local", "slurm", "submitit-local")


class SweepError(Exception):
    """Some runs of a sweep failed; the others finished and were reported."""


@dataclass
class SweepRun:
    config: TrainConfig
    store_episodes: int  # episodes in the demo store it trains on (few-shot runs use the first ones)

    @property
    def folder(self) -> Path:
        return self.config.run_path

    @property
    def finished(self) -> bool:
        return (self.folder / "final.json").exists()


def split_values(value: str) -> list[str]:
    """`a,b,[1,2]` -> ["a", "b", "[1,2]"]: commas inside brackets belong to a list value."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(value):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(value[start:i])
            start = i + 1
    values.append(value[start:])
    return values


def plan(overrides: list[str], sweep_dir: str | Path) -> list[SweepRun]:
    """Every run of the sweep, type-checked and validated, each with its own folder:
    `<sweep_dir>/<task>/<key>=<value>/...` with one level per swept key."""
    from mp1.data.demos import DemoConfig, default_store_path
    from mp1.envs import resolve_env_names

    axes: dict[str, list[str]] = {}
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value or key=v1,v2,..., got {arg!r}")
        if key in ("run_dir", "data_path"):
            raise ValueError(f"{key} is set per run by the sweep")
        axes[key] = resolve_env_names(split_values(value)) if key == "task" else split_values(value)
    axes.setdefault("task", [DEFAULT_TASK])
    swept = [key for key, values in axes.items() if len(values) > 1 and key != "task"]
    demo_pool = max(parse_overrides([f"demos={d}"]).demos for d in axes.get("demos", [TrainConfig.demos]))

    runs = []
    for combo in itertools.product(*axes.values()):
        settings = dict(zip(axes, combo))
        folder = Path(sweep_dir) / settings["task"].replace("/", "_")
        for key in swept:
            folder /= f"{key}={settings[key]}"
        config = parse_overrides([f"{k}={v}" for k, v in settings.items()] + [f"run_dir={folder}"])
        if config.demos < demo_pool:  # few-shot runs take the first episodes of the largest store
            pool = DemoConfig(episodes=demo_pool, seed=config.demo_seed)
            config.data_path = str(default_store_path(config.data_dir, config.task, pool))
        runs.append(SweepRun(config, demo_pool))
    return runs


def run_one(config: TrainConfig) -> str:
    """One run in a launcher's worker: '' on success, else the error (the other runs go on)."""
    from mp1.train import Trainer

    try:
        Trainer(config).train()
        return ""
    except Exception:  # noqa: BLE001 - reported to the parent with the run's folder
        return traceback.format_exc()


def launch_local(configs: list[TrainConfig], jobs: int) -> list[str]:
    """joblib's loky process pool, `jobs` runs at a time (it limits each worker's threads)."""
    from joblib import Parallel, delayed

    return Parallel(n_jobs=jobs, backend="loky")(delayed(run_one)(c) for c in configs)


def launch_submitit(configs: list[TrainConfig], folder: Path, cluster: str, jobs: int, options: dict) -> list[str]:
    """submitit: a SLURM job array (at most `jobs` at a time), or local processes for testing."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(slurm_array_parallelism=jobs, **options)
    submitted = executor.map_array(run_one, configs)
    print(f"[sweep] submitted {len(submitted)} jobs: {', '.join(j.job_id for j in submitted[:5])}...", flush=True)
    return [_result(job) for job in submitted]


def _result(job) -> str:
    """A job's own report, or why the cluster lost it (time limit, node failure, ...)."""
    try:
        return job.result()
    except Exception as error:  # noqa: BLE001 - submitit's UncompletedJobError and kin
        return f"{type(error).__name__}: {error}"


def sweep(
    overrides: list[str], sweep_dir: str | Path, launcher: str = "local", jobs: int = 1,
    launcher_options: dict | None = None, dev_set: Collection[str] = (),
) -> Path:
    """Runs (or resumes) a sweep and writes its report (`dev_set` as `mp1 report --dev-set`);
    returns the report path."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    sweep_dir = Path(sweep_dir)
    runs = plan(overrides, sweep_dir)
    with FolderLock(sweep_dir):  # one sweep per folder; each run also locks its own
        return _run_sweep(runs, sweep_dir, launcher, jobs, launcher_options, dev_set)


def _run_sweep(
    runs: list[SweepRun], sweep_dir: Path, launcher: str, jobs: int, launcher_options: dict | None, dev_set: Collection[str]
) -> Path:
    from mp1.data.demos import DemoConfig, generate_demos
    from mp1.report import REPORT_FILE, write_sweep_report

    pending = [run for run in runs if not run.finished]
    print(f"[sweep] {len(runs)} runs, {len(runs) - len(pending)} finished already -> {sweep_dir}", flush=True)
    report = sweep_dir / REPORT_FILE
    if not pending and report.exists():
        print(f"[sweep] nothing to run: {report} stands (mp1 report remakes it)", flush=True)
        return report

    stores: dict[tuple[str, int, int], set[str]] = {}
    for run in pending:
        stores.setdefault((run.config.data_dir, run.config.demo_seed, run.store_episodes), set()).add(run.config.task)
    for (data_dir, demo_seed, episodes), tasks in sorted(stores.items()):
        generate_demos(sorted(tasks), data_dir, DemoConfig(episodes=episodes, seed=demo_seed), jobs=jobs)

    configs = [run.config for run in pending]
    if not configs:
        errors = []
    elif launcher == "local":
        if jobs > 1:
            for config in configs:
                config.threads = config.threads or max(1, (os.cpu_count() or 1) // jobs)
        errors = launch_local(configs, jobs)
    else:
        errors = launch_submitit(configs, sweep_dir / ".submitit", launcher.removeprefix("submitit-"), jobs, launcher_options or {})
    failed = [(run, error) for run, error in zip(pending, errors) if error]
    for run, error in failed:
        print(f"[sweep] FAILED {run.folder}:\n{error}", flush=True)
    report = write_sweep_report(sweep_dir, dev_set=dev_set) if len(failed) < len(runs) else None
    if failed:
        raise SweepError(f"{len(failed)} of {len(pending)} runs failed (see above); run the same command to retry them")
    return report
