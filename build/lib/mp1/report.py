"""Reports of finished runs: a markdown summary and a learning-curve plot."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter


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
    return _save(figure, out)


def write_run_report(run: str | Path) -> Path:
    from mp1.evaluate import dp3_protocol_label

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
            f"| DP3: {dp3_protocol_label(len(periodic))} | {100 * final['dp3_protocol_success']:.1f}% | "
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


# Published numbers, not measured here; their sources: docs/published.md.
PUBLISHED: dict[str, dict[str, float]] = tomllib.loads((Path(__file__).parent / "published.toml").read_text())["methods"]


# Folder levels `key=value` written by `mp1 sweep` that are not variants of a method.
NOT_A_VARIANT = ("task", "policy", "seed", "demos")
# Beyond this many methods (e.g. a few-shot sweep's method x demo-count columns) the per-task
# table turns round: one row per method.
WIDE_TABLE_METHODS = 4


def collect_runs(root: str | Path) -> list[dict]:
    """One row per finished run (a folder with final.json) below `root`. A run's variant is its
    policy plus its policy-config overrides and any other setting a sweep varied (its folder's
    `key=value` levels), so ablations and settings never average into the plain method."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("final.json")):
        final = json.loads(path.read_text())
        strict = final.get("strict_protocol", {})
        swept = [
            part for part in path.parent.relative_to(root).parts
            if "=" in part and not part.startswith(("model.", *(f"{key}=" for key in NOT_A_VARIANT)))
        ]
        rows.append({
            "run": str(path.parent), "task": final["task"],
            "policy": variant_name(final["policy"], run_overrides(final, path.parent), swept),
            "preset": final["preset"], "seed": final["seed"], "demos": final["demos"], "steps": final["steps"],
            "strict": number(final.get("strict_protocol_success")), "episodes": strict.get("episodes", 0),
            "dp3": number(final.get("dp3_protocol_success")) if final["periodic_evaluations"] else float("nan"),
            "latency_p50_ms": number(strict.get("latency_p50_ms")), "device": strict.get("device", ""),
            "curve": [(e["step"], e["success_rate"], e.get("train_seconds")) for e in final["periodic_evaluations"]],
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


def variant_name(policy: str, overrides: dict, settings: list[str] = ()) -> str:
    """`mp1`, or `mp1[dispersive.weight=0.0,lr=0.0003]` for a run with overrides or swept settings."""
    flat: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat.append(f"{prefix[:-1]}={value}")

    walk("", overrides)
    flat += settings
    return f"{policy}[{','.join(flat)}]" if flat else policy


def task_group(task: str) -> str:
    from mp1.envs.metaworld import BENCHMARK_TASKS

    suite, _, name = task.partition("/")
    if suite == "adroit":
        return "adroit"
    return next((group.replace("_", " ") for group, tasks in BENCHMARK_TASKS.items() if name in tasks), "other")


def number(value: float | None) -> float:
    """A value from final.json, where a missing number is null (or, in older files, absent)."""
    return float("nan") if value is None else float(value)


def finite(values: list[float]) -> list[float]:
    return [v for v in values if not np.isnan(v)]


def mean_or_nan(values: list[float]) -> float:
    values = finite(values)
    return float(np.mean(values)) if values else float("nan")


def cell(values: list[float]) -> str:
    """Mean ± population std in %, and n; one value has no spread to show."""
    values = finite(values)
    if not values:
        return "–"
    spread = f" ± {100 * np.std(values):.1f}" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.1f}{spread} (n={len(values)})"


def write_sweep_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Markdown tables (per task: mean ± std over seeds; per difficulty group; overall; both
    protocols, labelled; published numbers beside; a few-shot table when demo counts vary), a
    CSV of all runs, and plots: per-task bars, success vs latency, learning curves, few-shot."""
    import csv

    rows = collect_runs(root)
    if not rows:
        raise ValueError(f"no finished runs (final.json) below {root}")
    out_dir = Path(out_dir or root)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "curve"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    few_shot = len({r["demos"] for r in rows}) > 1
    for r in rows:  # the column a run belongs to
        r["label"] = f"{r['policy']} ({r['demos']} demos)" if few_shot else r["policy"]

    def method_order(row: dict) -> tuple:
        base = row["policy"].split("[")[0]
        return (list(PUBLISHED).index(base) if base in PUBLISHED else len(PUBLISHED), row["policy"], row["demos"])

    ordered = sorted(rows, key=method_order)
    labels = list(dict.fromkeys(r["label"] for r in ordered))
    tasks = sorted({r["task"] for r in rows}, key=lambda t: (task_group(t), t))
    pick = lambda key, **match: [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
    task_means = lambda key, label, members: [mean_or_nan(pick(key, task=t, label=label)) for t in members]

    lines = [f"# Sweep report: {root}", "", "Success in %, mean ± std over seeds (n = runs; in group rows over tasks, "
             "n = tasks). **strict**: final EMA checkpoint on fixed-seed episodes. **DP3**: mean of the 5 best periodic "
             "evaluations, of all when a run made fewer (optimistic; – when a run made none). Strict episodes per run: "
             f"{', '.join(str(e) for e in sorted({r['episodes'] for r in rows}))}.", ""]
    # (row name, group, {label: "strict | DP3" cells}): the tasks, then the groups' means over tasks.
    both = lambda strict, dp3: f"{cell(strict)} | {cell(dp3)}"
    entries = [(task, task_group(task), {l: both(pick("strict", task=task, label=l), pick("dp3", task=task, label=l))
                                         for l in labels}) for task in tasks]
    for group in sorted({task_group(t) for t in tasks}) + ["all"]:
        members = [t for t in tasks if group in ("all", task_group(t))]
        entries.append((f"**{group}** (mean over tasks)", "",
                        {l: both(task_means("strict", l, members), task_means("dp3", l, members)) for l in labels}))
    if len(labels) <= WIDE_TABLE_METHODS:  # methods side by side, a row per task
        lines += ["| task | group | " + " | ".join(f"{l} strict | {l} DP3" for l in labels) + " |",
                  "|" + " --- |" * (2 + 2 * len(labels))]
        lines += [f"| {name} | {group} | " + " | ".join(values[l] for l in labels) + " |" for name, group, values in entries]
    else:  # too many methods to read across: a row per method, a column pair per task
        lines += ["| method | " + " | ".join(f"{name} strict | {name} DP3" for name, _, _ in entries) + " |",
                  "|" + " --- |" * (1 + 2 * len(entries))]
        lines += [f"| {l} | " + " | ".join(values[l] for _, _, values in entries) + " |" for l in labels]

    lines += ["", "| method | published success (37 tasks, DP3 protocol) | published latency (RTX 4090) | "
              "measured `predict_action` p50 | device |", "| --- | --- | --- | --- | --- |"]
    for label in labels:
        published = PUBLISHED.get(label)
        success = f"{100 * published['success']:.1f}%" if published else "–"
        latency = f"{published['latency_ms']} ms" if published else "–"
        devices = ", ".join(sorted(set(pick("device", label=label))))
        measured = finite(pick("latency_p50_ms", label=label))
        lines.append(f"| {label} | {success} | {latency} | {f'{np.median(measured):.2f} ms' if measured else '–'} | {devices} |")

    plots = [plot_summary(rows, labels, tasks, out_dir / "summary.png"), plot_curves(rows, labels, tasks, out_dir / "learning_curves.png")]
    if any(point[2] is not None for r in rows for point in r["curve"]):
        plots.append(plot_curves(rows, labels, tasks, out_dir / "success_vs_time.png", clock=True))
    if few_shot:
        variants = list(dict.fromkeys(r["policy"] for r in ordered))
        counts = sorted({r["demos"] for r in rows})
        lines += ["", "Few-shot: strict success in %, mean over tasks ± std over tasks.", "",
                  "| method | " + " | ".join(f"{d} demos" for d in counts) + " |", "|" + " --- |" * (1 + len(counts))]
        for variant in variants:
            per_count = [cell(task_means("strict", f"{variant} ({d} demos)", tasks)) for d in counts]
            lines.append(f"| {variant} | " + " | ".join(per_count) + " |")
        plots.append(plot_few_shot(rows, variants, counts, tasks, out_dir / "few_shot.png"))
    lines += [""] + [f"![{plot.stem}]({plot.name})" for plot in plots] + ["", "All runs: [runs.csv](runs.csv)"]
    out = out_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def plot_summary(rows: list[dict], labels: list[str], tasks: list[str], out: Path) -> Path:
    panels_width, legend_width = max(8, 1.2 * len(tasks) + 4), 2  # inches
    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(panels_width + legend_width, 4))
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        mine = [r for r in rows if r["label"] == label]
        means = [100 * mean_or_nan([r["strict"] for r in mine if r["task"] == t]) for t in tasks]
        bars.bar(np.arange(len(tasks)) + i * width, means, width, label=label, color=colours(i))
        latencies = finite([r["latency_p50_ms"] for r in mine])
        if latencies:  # runs without a strict evaluation measured no latency
            scatter.scatter(np.median(latencies), 100 * mean_or_nan([r["strict"] for r in mine]), s=60, color=colours(i))
    bars.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, [t.split("/")[1] for t in tasks], rotation=30, ha="right")
    bars.set(ylabel="success % (strict)", ylim=(0, 105), title="per task")
    scatter.set(xlabel="predict_action p50 (ms)", ylabel="mean success % (strict)", ylim=(-5, 105), title="success vs latency")
    if scatter.collections:
        scatter.set_xscale("log")
        scatter.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 10, 20, 50, 100 ms: latencies span one decade
        scatter.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        scatter.xaxis.set_minor_formatter(NullFormatter())
    else:
        scatter.text(0.5, 0.5, "no strict evaluation, no latency", ha="center", transform=scatter.transAxes)
    panels = panels_width / (panels_width + legend_width)
    figure.legend(*bars.get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(panels, 0.5))
    return _save(figure, out, rect=(0, 0, panels, 1))


def plot_curves(rows: list[dict], labels: list[str], tasks: list[str], out: Path, clock: bool = False) -> Path:
    """Periodic success (EMA) against training step, or with `clock` against the training
    wall-clock (minutes in training steps, evaluations excluded; runs that recorded it), mean
    over seeds, one panel per task."""
    columns = min(4, len(tasks))
    figure, axes = plt.subplots(-(-len(tasks) // columns), columns, figsize=(4 * columns, 3 * -(-len(tasks) // columns)),
                                squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for label in labels:
            curves = [r["curve"] for r in rows if r["task"] == task and r["label"] == label and r["curve"]]
            if clock:
                curves = [c for c in curves if all(point[2] is not None for point in c)]
            if curves:
                length = min(len(c) for c in curves)
                x = [np.mean([c[i][2] / 60 if clock else c[i][0] for c in curves]) for i in range(length)]
                ax.plot(x, [100 * np.mean([c[i][1] for c in curves]) for i in range(length)], marker="o",
                        color=f"C{labels.index(label)}")
        ax.set(title=task, xlabel="training wall-clock (min)" if clock else "step", ylabel="success % (periodic)",
               ylim=(-5, 105))
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=f"C{i}", marker="o", label=label) for i, label in enumerate(labels)]
    figure.legend(handles=handles, fontsize=7, loc="upper center", ncol=min(4, len(labels)))
    return _save(figure, out, rect=(0, 0, 1, 1 - 0.08 * -(-len(labels) // 4) / axes.shape[0]))


def plot_few_shot(rows: list[dict], variants: list[str], counts: list[int], tasks: list[str], out: Path) -> Path:
    figure, ax = plt.subplots(figsize=(5, 3.6))
    for variant in variants:
        means = [100 * mean_or_nan([r["strict"] for r in rows if r["policy"] == variant and r["demos"] == d]) for d in counts]
        ax.plot(counts, means, marker="o", label=variant)
    ax.set(xscale="log", xticks=counts, xticklabels=counts, xlabel="demonstrations", ylabel="mean success % (strict)",
           ylim=(-5, 105), title=f"few-shot ({len(tasks)} task{'s' if len(tasks) > 1 else ''})")
    ax.minorticks_off()  # a log axis labels its minor ticks too, over the demo counts
    ax.legend(fontsize=7)
    return _save(figure, out)


def _save(figure, out: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lays the axes out inside `rect` (figure fraction; the rest is left to a figure legend) and writes the PNG."""
    figure.tight_layout(rect=rect)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
