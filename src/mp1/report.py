"""Reports of finished runs: a markdown summary and a learning-curve plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "train"], [r for r in records if r["kind"] == "eval"]


def plot_learning_curve(run: Path, out: Path) -> Path:
    """Training loss (raw error where the objective logs one) and periodic success rate."""
    train, evals = read_metrics(run)
    figure, (loss_ax, success_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        key = "mse" if "mse" in train[0] else "loss"
        steps = np.array([r["step"] for r in train])
        values = np.array([r[key] for r in train])
        window = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        loss_ax.plot(steps, values, alpha=0.3, lw=0.8)
        loss_ax.plot(steps[window - 1 :], smooth, lw=1.5)
        loss_ax.set(xlabel="step", ylabel=key, yscale="log", title=f"training {key}")
    if evals:
        success_ax.plot([r["step"] for r in evals], [100 * r["success_rate"] for r in evals], marker="o")
    success_ax.set(xlabel="step", ylabel="success %", ylim=(-5, 105), title="periodic evaluation (EMA)")
    figure.suptitle(run.name)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def write_run_report(run: str | Path) -> Path:
    run = Path(run)
    final = json.loads((run / "final.json").read_text())
    plot_learning_curve(run, run / "learning_curve.png")
    lines = [
        f"# {final['policy']} on {final['task']} (preset {final['preset']}, seed {final['seed']}, {final['demos']} demos)",
        "",
        f"Trained {final['epochs']} epochs ({final['steps']} steps).",
        "",
        "| protocol | success | detail |",
        "| --- | --- | --- |",
    ]
    strict = final.get("strict_protocol")
    if strict:
        lines.append(
            f"| strict: final EMA checkpoint | {100 * strict['success_rate']:.1f}% | {strict['episodes']} episodes from "
            f"seed {strict['seed']}, 95% CI [{100 * strict['ci95_low']:.1f}, {100 * strict['ci95_high']:.1f}] |"
        )
    periodic = final["periodic_evaluations"]
    if periodic:
        lines.append(
            f"| DP3: mean of the 5 best periodic evaluations | {100 * final['dp3_protocol_success']:.1f}% | "
            f"{len(periodic)} evaluations of {periodic[0]['episodes']} episodes (optimistic: best checkpoints picked afterwards) |"
        )
    if strict:
        lines += ["", f"`predict_action` latency on {strict['device']}: median {strict['latency_p50_ms']:.2f} ms, "
                  f"p99 {strict['latency_p99_ms']:.2f} ms (batch 1, whole call)."]
    lines += ["", "![learning curve](learning_curve.png)", ""]
    if (run / "eval" / "final.mp4").exists():
        lines.append("Rollout video: [eval/final.mp4](eval/final.mp4)")
    out = run / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out


# Published numbers (DESIGN.md; not measured here): average success over 37 tasks, 10 demos,
# 3 seeds, DP3 protocol; inference latency on an RTX 4090, batch 1.
PUBLISHED = {
    "mp1": {"success": 0.789, "latency_ms": 6.8},
    "flowpolicy": {"success": 0.716, "latency_ms": 12.6},
    "dp3": {"success": 0.687, "latency_ms": 132.2},
}


def collect_runs(root: str | Path) -> list[dict]:
    """One row per finished run (a folder with final.json) below `root`."""
    rows = []
    for path in sorted(Path(root).rglob("final.json")):
        final = json.loads(path.read_text())
        strict = final.get("strict_protocol", {})
        rows.append({
            "run": str(path.parent), "task": final["task"], "policy": variant_name(final["policy"], run_overrides(final, path.parent)),
            "preset": final["preset"],
            "seed": final["seed"], "demos": final["demos"], "steps": final["steps"],
            "strict": final.get("strict_protocol_success", float("nan")), "episodes": strict.get("episodes", 0),
            "dp3": final["dp3_protocol_success"], "latency_p50_ms": strict.get("latency_p50_ms", float("nan")),
            "device": strict.get("device", ""),
        })
    return rows


def run_overrides(final: dict, run: Path) -> dict:
    """The policy-config overrides of a run (from its final.json, or its config.yaml)."""
    if "model" in final:
        return final["model"]
    config = run / "config.yaml"
    if config.exists():
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(config)).get("model", {})
    return {}


def variant_name(policy: str, overrides: dict) -> str:
    """`mp1`, or `mp1[dispersive.weight=0.0]` for a run with policy overrides: ablations get their own column."""
    flat: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat.append(f"{prefix[:-1]}={value}")

    walk("", overrides)
    return f"{policy}[{','.join(flat)}]" if flat else policy


def task_group(task: str) -> str:
    from mp1.envs.metaworld import BENCHMARK_TASKS

    suite, _, name = task.partition("/")
    if suite == "adroit":
        return "adroit"
    return next((group.replace("_", " ") for group, tasks in BENCHMARK_TASKS.items() if name in tasks), "other")


def write_sweep_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Markdown table (per task: mean ± std over seeds; per difficulty group; overall; both
    protocols, labelled; published numbers beside), a CSV of all runs, and plots."""
    import csv

    rows = collect_runs(root)
    if not rows:
        raise ValueError(f"no finished runs (final.json) below {root}")
    out_dir = Path(out_dir or root)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    order = list(PUBLISHED)
    rank = lambda p: (order.index(p.split("[")[0]) if p.split("[")[0] in order else len(order), p)
    policies = sorted({r["policy"] for r in rows}, key=rank)
    tasks = sorted({r["task"] for r in rows}, key=lambda t: (task_group(t), t))
    cell = lambda values: "–" if not values else (
        f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f} (n={len(values)})"
    )
    pick = lambda key, **match: [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
    lines = [f"# Sweep report: {root}", "", "Success in %, mean ± std over seeds (n = runs; in group rows over tasks, n = tasks). **strict**: final EMA "
             "checkpoint on fixed-seed episodes. **DP3**: mean of the 5 best periodic evaluations (optimistic).", ""]
    header = "| task | group | " + " | ".join(f"{p} strict | {p} DP3" for p in policies) + " |"
    lines += [header, "|" + " --- |" * (2 + 2 * len(policies))]
    for task in tasks:
        values = " | ".join(f"{cell(pick('strict', task=task, policy=p))} | {cell(pick('dp3', task=task, policy=p))}" for p in policies)
        lines.append(f"| {task} | {task_group(task)} | {values} |")
    for group in sorted({task_group(t) for t in tasks}) + ["all"]:
        members = [t for t in tasks if group in ("all", task_group(t))]
        per_policy = []
        for p in policies:
            strict = [np.mean(pick("strict", task=t, policy=p)) for t in members if pick("strict", task=t, policy=p)]
            dp3 = [np.mean(pick("dp3", task=t, policy=p)) for t in members if pick("dp3", task=t, policy=p)]
            per_policy.append(f"{cell(strict)} | {cell(dp3)}")
        lines.append(f"| **{group}** (mean over tasks) | | " + " | ".join(per_policy) + " |")
    lines += ["", "| policy | published success (37 tasks, DP3 protocol) | published latency (RTX 4090) | "
              "measured latency p50 | device |", "| --- | --- | --- | --- | --- |"]
    for p in policies:
        published = PUBLISHED.get(p) if "[" not in p else None
        success = f"{100 * published['success']:.1f}%" if published else "–"
        latency = f"{published['latency_ms']} ms" if published else "–"
        devices = ", ".join(sorted(set(pick("device", policy=p))))
        lines.append(f"| {p} | {success} | {latency} | {np.median(pick('latency_p50_ms', policy=p)):.2f} ms | {devices} |")

    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(tasks) + 4), 4))
    width = 0.8 / len(policies)
    for i, p in enumerate(policies):
        means = [100 * np.mean(pick("strict", task=t, policy=p) or [np.nan]) for t in tasks]
        bars.bar(np.arange(len(tasks)) + i * width, means, width, label=p)
        scatter.scatter(np.median(pick("latency_p50_ms", policy=p)), 100 * np.nanmean(pick("strict", policy=p)), label=p, s=60)
    bars.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, [t.split("/")[1] for t in tasks], rotation=30, ha="right")
    bars.set(ylabel="success % (strict)", ylim=(0, 105), title="per task")
    scatter.set(xscale="log", xlabel="predict_action p50 (ms)", ylabel="mean success % (strict)", title="success vs latency")
    bars.legend()
    scatter.legend()
    figure.tight_layout()
    figure.savefig(out_dir / "summary.png", dpi=110)
    plt.close(figure)
    lines += ["", "![per-task success and success vs latency](summary.png)", "", "All runs: [runs.csv](runs.csv)"]
    out = out_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
