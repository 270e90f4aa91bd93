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
