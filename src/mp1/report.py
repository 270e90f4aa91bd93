"""Reports of finished runs: a markdown summary and a learning-curve plot."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

# The report's name in a run's folder and in a sweep's: what `mp1 train` and `mp1 sweep` point to.
REPORT_FILE = "report.md"


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "train"], [r for r in records if r["kind"] == "eval"]


def plot_learning_curve(run: Path, out: Path) -> Path:
    """Training loss (raw error where the objective logs one) and the periodic evaluations:
    success rate in the simulator, and/or the action error on held-out episodes."""
    train, evals = read_metrics(run)
    rollouts = [r for r in evals if "success_rate" in r]
    validations = [r for r in evals if "val_mse" in r]
    panels = 1 + bool(rollouts or not validations) + bool(validations)
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    loss_ax, *eval_axes = axes
    if train:
        key = "mse" if "mse" in train[0] else "loss"
        steps = np.array([r["step"] for r in train])
        values = np.array([r[key] for r in train])
        window = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        loss_ax.plot(steps, values, alpha=0.3, lw=0.8)
        loss_ax.plot(steps[window - 1 :], smooth, lw=1.5)
        loss_ax.set(xlabel="step", ylabel=key, yscale="log", title=f"training {key}")
    if rollouts or not validations:
        success_ax = eval_axes.pop(0)
        success_ax.plot([r["step"] for r in rollouts], [100 * r["success_rate"] for r in rollouts], marker="o")
        success_ax.set(xlabel="step", ylabel="success %", ylim=(-5, 105), title="periodic evaluation (EMA)")
    if validations:
        validation_ax = eval_axes.pop(0)
        validation_ax.plot([r["step"] for r in validations], [r["val_mse"] for r in validations], marker="o")
        validation_ax.set(xlabel="step", ylabel="normalised action MSE", yscale="log",
                          title=f"validation on {validations[0]['val_episodes']} held-out episodes (EMA)")
    figure.suptitle(run.name)
    return _save(figure, out)


def write_run_report(run: str | Path) -> Path:
    from mp1.evaluate import dp3_protocol_label

    run = Path(run)
    final = json.loads((run / "final.json").read_text())
    plot_learning_curve(run, run / "learning_curve.png")
    lines = [
        f"# {final['policy']} on {final['task'] or 'a recording (no simulator)'} (preset {final['preset']}, "
        f"seed {final['seed']}, {final['demos'] or 'all'} demos)",
        "",
        f"Trained {final['epochs']} epochs ({final['steps']} steps).",
    ]
    strict = final.get("strict_protocol")
    periodic = [e for e in final["periodic_evaluations"] if "success_rate" in e]
    if strict or periodic:
        lines += ["", "| protocol | success | detail |", "| --- | --- | --- |"]
    if strict:
        lines.append(
            f"| strict: final EMA checkpoint | {100 * strict['success_rate']:.1f}% | {strict['episodes']} episodes from "
            f"seed {strict['seed']}, 95% CI [{100 * strict['ci95_low']:.1f}, {100 * strict['ci95_high']:.1f}] |"
        )
    if periodic:
        lines.append(
            f"| DP3: {dp3_protocol_label(len(periodic))} | {100 * final['dp3_protocol_success']:.1f}% | "
            f"{len(periodic)} evaluations of {periodic[0]['episodes']} episodes (optimistic: best checkpoints picked afterwards) |"
        )
    validation = final.get("validation")
    if validation:
        per_dimension = ", ".join(f"{v:.4f}" for v in validation["val_mse_per_dim"])
        lines += ["", f"Validation, final EMA weights on {validation['val_episodes']} held-out episodes "
                  f"({validation['val_windows']} windows): normalised action MSE **{validation['val_mse']:.4f}** "
                  f"(per action dimension: {per_dimension}); the chunk the policy samples against the demonstrated one, "
                  "each dimension scaled to [-1, 1] as the policy sees it."]
    if strict:
        lines += ["", f"`predict_action` latency on {strict['device']}: median {strict['latency_p50_ms']:.2f} ms, "
                  f"p99 {strict['latency_p99_ms']:.2f} ms (batch 1, whole call)."]
    lines += ["", "![learning curve](learning_curve.png)", ""]
    if (run / "eval" / "final.mp4").exists():
        lines.append("Rollout video: [eval/final.mp4](eval/final.mp4)")
    out = run / REPORT_FILE
    out.write_text("\n".join(lines) + "\n")
    return out


# Published numbers, not measured here; their sources: docs/published.md.
PUBLISHED: dict[str, dict[str, float]] = tomllib.loads((Path(__file__).parent / "published.toml").read_text())["methods"]


# Folder levels `key=value` written by `mp1 sweep` that are not variants of a method.
NOT_A_VARIANT = ("task", "policy", "seed", "demos")


def collect_runs(root: str | Path) -> list[dict]:
    """One row per finished run (a folder with final.json) below `root`, and one per re-evaluation
    of it with inference knobs (`knob_rows`). A run's variant is its policy plus its policy-config
    overrides and any other setting a sweep varied (its folder's `key=value` levels), so ablations
    and settings never average into the plain method; `sampling` names a re-evaluation's knobs
    ("steps=2"; empty for the run's own strict evaluation)."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("final.json")):
        final = json.loads(path.read_text())
        strict = final.get("strict_protocol", {})
        overrides = run_overrides(final, path.parent)
        swept = [
            part for part in path.parent.relative_to(root).parts
            if "=" in part and not part.startswith(("model.", *(f"{key}=" for key in NOT_A_VARIANT)))
        ]
        rows.append({
            "run": str(path.parent), "task": final["task"],
            "policy": variant_name(final["policy"], overrides, swept), "sampling": "",
            "preset": final["preset"], "seed": final["seed"], "demos": final["demos"], "steps": final["steps"],
            "strict": number(final.get("strict_protocol_success")), "episodes": strict.get("episodes", 0),
            "dp3": number(final.get("dp3_protocol_success")) if final["periodic_evaluations"] else float("nan"),
            "latency_p50_ms": number(strict.get("latency_p50_ms")), "device": strict.get("device", ""),
            "train_seconds": number(final.get("train_seconds")), "recipe": final.get("recipe"),
            "val_mse": number(final.get("validation", {}).get("val_mse")),
            "curve": [(e["step"], e["success_rate"], e.get("train_seconds"))
                      for e in final["periodic_evaluations"] if "success_rate" in e],
        })
        rows += [{**rows[-1], "policy": variant_name(final["policy"], overrides, [*swept, *knobs]),
                  "sampling": ",".join(knobs), **fields}
                 for knobs, fields in knob_rows(path.parent, strict)]
    return rows


def knob_settings(sampling: dict[str, Any]) -> list[str]:
    """The inference knobs set in `sampling` (None keeps the policy's own) as `key=value` words."""
    return [f"{key}={value}" for key, value in sampling.items() if value is not None]


def knob_suffix(sampling: dict[str, Any]) -> str:
    """How a result file names its knobs (`_noise_scale0.5_steps2`): `mp1 eval`'s, and the loss
    analyses' beside them."""
    return "".join(f"_{setting.replace('=', '')}" for setting in knob_settings(sampling))


def evaluation_file(seed: int, episodes: int, sampling: dict[str, Any]) -> str:
    """The name `mp1 eval` gives its result in a run's `eval/`: first seed, episodes and knobs."""
    return f"eval_seed{seed}_{episodes}ep{knob_suffix(sampling)}.json"


def knob_rows(run: Path, strict: dict) -> list[tuple[list[str], dict]]:
    """The run's re-evaluations with inference knobs (`mp1 eval RUN --noise-scale S --steps K`,
    saved in its `eval/`) on the strict evaluation's own episodes (same first seed and count), so
    that they compare episode for episode: per file, its knob settings and the row fields it
    replaces. The weights are the run's, so no training time or periodic curve is counted again."""
    found = []
    for path in sorted((run / "eval").glob("eval_seed*.json")):
        result = json.loads(path.read_text())
        knobs = knob_settings(result.get("sampling") or {})
        if knobs and (result["seed"], result["episodes"]) == (strict.get("seed"), strict.get("episodes")):
            found.append((knobs, {
                "strict": number(result["success_rate"]), "dp3": float("nan"), "latency_p50_ms": number(result["latency_p50_ms"]),
                "device": result["device"], "train_seconds": float("nan"), "recipe": None, "curve": [],
            }))
    return found


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
    flat = [f"{key}={value}" for key, value in flatten(overrides).items()] + list(settings)
    return f"{policy}[{','.join(flat)}]" if flat else policy


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings as `a.b.c: value` pairs (a list is one value), so that two can be compared key by key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# The paper's order of the difficulty groups: Adroit, then Meta-World from easy to very hard; others follow.
GROUP_ORDER = ("adroit", "easy", "medium", "hard", "very hard")


def task_group(task: str) -> str:
    from mp1.envs.metaworld import BENCHMARK_TASKS

    suite, _, name = task.partition("/")
    if suite == "adroit":
        return "adroit"
    return next((group.replace("_", " ") for group, tasks in BENCHMARK_TASKS.items() if name in tasks), "other")


def paper_order(task: str) -> tuple[int, str, str]:
    """Sort key: by group in the paper's order, then by name."""
    group = task_group(task)
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group, task)


def groups_of(tasks: list[str]) -> list[str]:
    """The groups of tasks sorted by `paper_order`, each once, in that order."""
    return list(dict.fromkeys(task_group(task) for task in tasks))


def group_members(tasks: list[str]) -> dict[str, list[str]]:
    """The tasks of each group, in the paper's order, then all of them under "all": a report's group rows."""
    return {**{group: [t for t in tasks if task_group(t) == group] for group in groups_of(tasks)}, "all": list(tasks)}


def number(value: float | None) -> float:
    """A value from final.json, where a missing number is null (or, in older files, absent)."""
    return float("nan") if value is None else float(value)


def finite(values: list[float]) -> list[float]:
    return [v for v in values if not np.isnan(v)]


def average_or_nan(values: list[float], average: Callable[[list[float]], Any] = np.mean) -> float:
    """The mean (or another `average`) of the finite values; NaN, shown as –, when there are none."""
    values = finite(values)
    return float(average(values)) if values else float("nan")


def cell(values: list[float]) -> str:
    """Mean ± population std in %, and n; one value has no spread to show."""
    values = finite(values)
    if not values:
        return "–"
    spread = f" ± {100 * np.std(values):.1f}" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.1f}{spread} (n={len(values)})"


# A table entry: (row name, group, {method label: {kind of cell, e.g. "strict": text}}).
Entry = tuple[str, str, dict[str, dict[str, str]]]
# The kinds of success cell of a method, and the run field each reads.
PROTOCOLS = {"strict": "strict", "DP3": "dp3"}
OUTCOMES = ("win", "tie", "loss")
# Recipe entries that follow from a task's data (sizes of its actions, states and points), so
# they differ across the tasks of one column without being a different recipe.
TASK_SHAPE_KEYS = ("model.action_dim", "model.state_dim", "model.point_dim")


def write_sweep_report(
    roots: str | Path | Sequence[str | Path], out_dir: str | Path | None = None, dev_set: Collection[str] = ()
) -> Path:
    """The runs below one or several folders (e.g. a table's seed-0 and seed-1 sweeps and a
    lever's variants, reported as one), as Markdown tables (per task: mean ± std over seeds; per
    difficulty group in the paper's order; overall; both protocols, labelled; published numbers
    beside; wins, ties and losses against DP3; training time and latency; a few-shot table when
    demo counts vary; the headline outside `dev_set`, the tasks used to choose settings, when
    given; the columns that mix recipes; runs repeated with the same settings and seed, which
    count once), a CSV of all runs, and plots: per-task bars, success vs latency, each method
    against DP3, learning curves, few-shot."""
    import csv

    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if out_dir is None and len(roots) != 1:
        raise ValueError(f"name the output folder for a report over {len(roots)} folders")
    folders = ", ".join(map(str, roots))
    rows = [row for root in roots for row in collect_runs(root)]
    if not rows:
        raise ValueError(f"no finished runs (final.json) below {folders}")
    out_dir = Path(out_dir or roots[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k not in ("curve", "recipe")], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    rows, repeats = drop_repeats(rows)

    few_shot = len({r["demos"] for r in rows}) > 1
    for r in rows:  # the column a run belongs to
        r["label"] = f"{r['policy']} ({r['demos']} demos)" if few_shot else r["policy"]

    def method_order(row: dict) -> tuple:
        base = row["policy"].split("[")[0]
        return (list(PUBLISHED).index(base) if base in PUBLISHED else len(PUBLISHED), row["policy"], row["demos"])

    ordered = sorted(rows, key=method_order)
    labels = list(dict.fromkeys(r["label"] for r in ordered))
    tasks = sorted({r["task"] for r in rows}, key=paper_order)
    dev_set = set(dev_set)
    held_out = [t for t in tasks if t not in dev_set]
    recipes = recipe_differences(rows, labels)

    lines = [f"# Sweep report: {folders}", "", "Success in %, mean ± std over seeds (n = runs; in group rows over tasks, "
             "n = tasks). **strict**: final EMA checkpoint on fixed-seed episodes. **DP3**: mean of the 5 best periodic "
             "evaluations, of all when a run made fewer (optimistic; – when a run made none). Strict episodes per run: "
             f"{', '.join(str(e) for e in sorted({r['episodes'] for r in rows}))}."]
    published = [label for label in labels if label in PUBLISHED]
    if published:
        lines += ["", "**published**: the paper's number (arXiv 2507.10543), from another protocol: DP3's (mean of the "
                  "5 best periodic evaluations, 3 seeds, GPU, paper scale), averaged over its 37 tasks; only that "
                  "average is recorded (src/mp1/published.toml), so it stands in the **all** row alone."]
    if dev_set:
        missing = sorted(dev_set - set(tasks))
        lines += ["", f"Development set (marked *dev*): {', '.join(sorted(dev_set))}"
                  + (f"; no runs of {', '.join(missing)}" if missing else "") + ". Headline over the other tasks below."]
    if recipes:
        lines += ["", "**Some columns mix runs of different recipes**: see *Runs that differ in recipe* below."]
    if repeats:
        lines += ["", f"**{len(repeats)} {'run repeats' if len(repeats) == 1 else 'runs repeat'} an earlier one's "
                  "settings and seed** and counted once: see *Repeated runs* below."]

    entries = [(f"{task} *dev*" if task in dev_set else task, task_group(task),
                {l: {kind: cell(pick(rows, key, task=task, label=l)) for kind, key in PROTOCOLS.items()} for l in labels})
               for task in tasks] + group_entries(rows, labels, tasks)
    for label in published:
        entries[-1][2][label]["published"] = f"{100 * PUBLISHED[label]['success']:.1f}"
    lines += ["", "## Success per task", "", *table(entries, labels, list(PROTOCOLS), ("published",))]
    compared = dp3_baselines(rows, labels)
    if compared:
        lines += ["", "## Against DP3", "", "Tasks won / tied / lost in strict success, pooled over seeds (successes and "
                  "episodes summed); a tie when the 95% Wilson intervals overlap. Tasks where either has no strict "
                  "evaluation are not counted.", "", *versus_dp3(rows, labels, tasks)]
    if dev_set:
        lines += ["", f"## Headline outside the development set ({len(held_out)} of {len(tasks)} tasks)", "",
                  *table(group_entries(rows, labels, held_out, "held-out "), labels, list(PROTOCOLS))]
        if compared:
            lines += ["", "Against DP3 on these tasks (as above):", "", *versus_dp3(rows, labels, held_out)]
        lines += ["", *development_ranking(rows, labels, sorted(dev_set, key=paper_order))]

    lines += ["", "## Methods", "", "| method | published success (37 tasks, DP3 protocol) | published latency (RTX 4090) | "
              "measured `predict_action` p50 | device | runs | training per run: median (total) |", "|" + " --- |" * 7]
    for label in labels:
        paper = PUBLISHED.get(label)
        success = f"{100 * paper['success']:.1f}%" if paper else "–"
        latency = f"{paper['latency_ms']} ms" if paper else "–"
        devices = ", ".join(sorted(set(pick(rows, "device", label=label))))
        measured = finite(pick(rows, "latency_p50_ms", label=label))
        seconds = finite(pick(rows, "train_seconds", label=label))
        training = f"{duration(float(np.median(seconds)))} ({duration(sum(seconds))})" if seconds else "–"
        lines.append(f"| {label} | {success} | {latency} | {f'{np.median(measured):.2f} ms' if measured else '–'} | "
                     f"{devices} | {len(pick(rows, 'run', label=label))} | {training} |")
    cost_rows = [(t, task_group(t), [t]) for t in tasks] + [
        (f"**{group}** (runs of its tasks)", "", members) for group, members in group_members(tasks).items()]
    lines += ["", "## Cost per task", "", "Median training wall-clock per run (training steps only) · median `predict_action` "
              "p50; in group rows over the runs of the group's tasks.", "",
              *table([(name, group, {l: {"training · p50": cost_cell(rows, members, l)} for l in labels})
                      for name, group, members in cost_rows], labels, ["training · p50"])]

    plots = [plot_summary(rows, labels, tasks, out_dir / "summary.png")]
    if compared:
        plots.append(plot_versus_dp3(rows, labels, tasks, out_dir / "versus_dp3.png"))
    plots.append(plot_curves(rows, labels, tasks, out_dir / "learning_curves.png"))
    if any(point[2] is not None for r in rows for point in r["curve"]):
        plots.append(plot_curves(rows, labels, tasks, out_dir / "success_vs_time.png", clock=True))
    if few_shot:
        variants = list(dict.fromkeys(r["policy"] for r in ordered))
        counts = sorted({r["demos"] for r in rows})
        lines += ["", "## Few-shot", "", "Strict success in %, mean over tasks ± std over tasks.", "",
                  "| method | " + " | ".join(f"{d} demos" for d in counts) + " |", "|" + " --- |" * (1 + len(counts))]
        for variant in variants:
            per_count = [cell(task_means(rows, "strict", f"{variant} ({d} demos)", tasks)) for d in counts]
            lines.append(f"| {variant} | " + " | ".join(per_count) + " |")
        plots.append(plot_few_shot(rows, variants, counts, tasks, out_dir / "few_shot.png"))
    lines += recipes + repeated_runs(repeats, roots)
    lines += [""] + [f"![{plot.stem}]({plot.name})" for plot in plots] + ["", "All runs: [runs.csv](runs.csv)"]
    out = out_dir / REPORT_FILE
    out.write_text("\n".join(lines) + "\n")
    return out


def pick(rows: list[dict], key: str, **match) -> list:
    """Field `key` of the runs whose fields equal `match`."""
    return [r[key] for r in rows if all(r[k] == v for k, v in match.items())]


def strict_gaps(rows: list[dict], over: float, methods: tuple[str, str]) -> list[tuple[str, float, float]]:
    """(task, first method's strict %, second's; each the mean over its seeds), in the paper's
    order, for each task where both have a strict evaluation and they differ by more than `over`
    points: the tasks owed a second seed, or a look at what goes wrong (issue #22)."""
    found = []
    for task in sorted({r["task"] for r in rows}, key=paper_order):
        # rounded: 100 * 0.45 is 45.00000000000001, and 60 - 45 must not exceed 15
        a, b = (round(100 * average_or_nan(pick(rows, "strict", task=task, policy=m)), 6) for m in methods)
        if not (np.isnan(a) or np.isnan(b)) and abs(a - b) > over:
            found.append((task, a, b))
    return found


def task_means(rows: list[dict], key: str, label: str, tasks: list[str]) -> list[float]:
    """Per task, the mean over a method's seeds: group rows weigh every task alike, whatever its runs."""
    return [average_or_nan(pick(rows, key, task=t, label=label)) for t in tasks]


def group_entries(rows: list[dict], labels: list[str], tasks: list[str], scope: str = "") -> list[Entry]:
    """The mean over the tasks of each group, in the paper's order, then over all `tasks`."""
    entries = []
    for group, members in group_members(tasks).items():
        cells = {l: {kind: cell(task_means(rows, key, l, members)) for kind, key in PROTOCOLS.items()} for l in labels}
        entries.append((f"**{group}** (mean over {scope}tasks)", "", cells))
    return entries


def table(entries: list[Entry], labels: list[str], kinds: list[str], trailing: tuple[str, ...] = ()) -> list[str]:
    """A markdown table: a row per entry (task or group), methods side by side, or, when there are
    more methods than entries (a few-shot sweep's method x demo-count columns on a few tasks), a
    row per method: the longer list runs down the page. `kinds` are each method's cells in a row,
    `trailing` kinds come after all methods' (so that another protocol's numbers stand apart).
    Beyond each method's first kind, a column with nothing in it (every cell – or absent, e.g. the
    DP3 protocol of re-evaluations, which have no periodic evaluations) is left out."""
    def filled(label: str, kind: str, among: list[Entry]) -> bool:
        return kind == kinds[0] or any(cells[label].get(kind, "–") != "–" for _, _, cells in among)

    if len(labels) <= len(entries):
        columns = [(l, k) for l in labels for k in kinds] + [(l, k) for k in trailing for l in labels]
        columns = [(l, k) for l, k in columns if filled(l, k, entries)]
        header = ["task", "group", *(f"{l} {k}" for l, k in columns)]
        body = [[name, group, *(cells[l].get(k, "–") for l, k in columns)] for name, group, cells in entries]
    else:
        columns = [(i, k) for i, entry in enumerate(entries) for k in [*kinds, *trailing]
                   if any(filled(l, k, [entry]) for l in labels)]
        header = ["method", *(f"{entries[i][0]} {k}" for i, k in columns)]
        body = [[l, *(entries[i][2][l].get(k, "–") for i, k in columns)] for l in labels]
    return [f"| {' | '.join(header)} |", "|" + " --- |" * len(header), *(f"| {' | '.join(row)} |" for row in body)]


def development_ranking(rows: list[dict], labels: list[str], dev_tasks: list[str]) -> list[str]:
    """The number a setting is chosen on: each method's strict success over the development tasks
    (per task the mean over its seeds, then over tasks), best first. A method without a run on
    every development task is listed after, unranked: its mean would be over other tasks."""
    if not dev_tasks:
        return []
    summaries = []
    for label in labels:
        per_task = task_means(rows, "strict", label, dev_tasks)
        counts = [len(finite(pick(rows, "strict", task=t, label=label))) for t in dev_tasks]
        seeds = str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
        summaries.append((label, average_or_nan(per_task), seeds, len(finite(per_task))))
    complete = sorted((s for s in summaries if s[3] == len(dev_tasks)), key=lambda s: -s[1])
    partial = [s for s in summaries if s[3] < len(dev_tasks)]
    lines = [f"## The choice: the development set ({len(dev_tasks)} task{'s' * (len(dev_tasks) != 1)})", "",
             "Strict success over the development tasks (per task the mean over its seeds, then over tasks), best "
             "first; methods without a run on every task come after, unranked.", "",
             "| rank | method | mean strict | seeds per task | tasks with runs |", "|" + " --- |" * 5]
    ranked = [(str(rank), summary) for rank, summary in enumerate(complete, 1)] + [("–", summary) for summary in partial]
    return lines + [f"| {rank} | {label} | {'–' if np.isnan(mean) else f'{100 * mean:.1f}'} | {seeds} | {count} |"
                    for rank, (label, mean, seeds, count) in ranked]


def dp3_baselines(rows: list[dict], labels: list[str]) -> dict[str, str]:
    """The columns of `labels` that have DP3's to be compared with (the plain `dp3` runs at the
    same demo count), in the order of `labels`, each with that DP3 column."""
    dp3 = {r["demos"]: r["label"] for r in rows if r["policy"] == "dp3"}
    demos = {r["label"]: r["demos"] for r in rows}
    return {label: dp3[demos[label]] for label in labels if demos[label] in dp3 and label != dp3[demos[label]]}


def pooled_strict(rows: list[dict], task: str, label: str) -> tuple[int, int]:
    """Strict successes and episodes of a method on a task, summed over its seeds: one interval
    from all its episodes is narrower than any seed's."""
    runs = [r for r in rows if r["task"] == task and r["label"] == label and r["episodes"] and not np.isnan(r["strict"])]
    return sum(round(r["strict"] * r["episodes"]) for r in runs), sum(r["episodes"] for r in runs)


def versus(rows: list[dict], task: str, label: str, baseline: str) -> str | None:
    """The outcome ("win", "tie" or "loss") of `label` against `baseline` on `task` in strict
    success: a tie when their 95% Wilson intervals overlap, so a gap within the episodes' noise is
    no win; None when either has no strict evaluation there."""
    from mp1.evaluate import wilson_interval

    mine, theirs = pooled_strict(rows, task, label), pooled_strict(rows, task, baseline)
    if not (mine[1] and theirs[1]):
        return None
    (low, high), (base_low, base_high) = wilson_interval(*mine), wilson_interval(*theirs)
    return "win" if low > base_high else "loss" if high < base_low else "tie"


def versus_dp3(rows: list[dict], labels: list[str], tasks: list[str]) -> list[str]:
    """A table of each method's wins / ties / losses against DP3 per group and over `tasks`, and
    which tasks it won and lost."""
    groups = group_members(tasks)
    lines = [f"| method | {' | '.join(groups)} |", "|" + " --- |" * (1 + len(groups))]
    named = []
    for label, baseline in dp3_baselines(rows, labels).items():
        outcomes = {task: versus(rows, task, label, baseline) for task in tasks}
        counts = [" / ".join(str(sum(outcomes[t] == outcome for t in members)) for outcome in OUTCOMES)
                  for members in groups.values()]
        lines.append(f"| {label} vs {baseline} | {' | '.join(counts)} |")
        won, lost = ([task for task in tasks if outcomes[task] == outcome] for outcome in ("win", "loss"))
        if won or lost:
            named.append(f"- {label}: wins {', '.join(won) or 'none'}; losses {', '.join(lost) or 'none'}")
    return lines + [""] + named


REPEAT_KEYS = ("task", "policy", "seed", "demos", "preset", "steps", "episodes")


def drop_repeats(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """The rows with one run per method, task, seed and setting, and (counted, repeat) pairs for
    the others. A run repeated with the same settings and seed (a rerun that re-makes a policy
    file or checks reproducibility, reported beside the table it repeats) would otherwise count
    as another seed; the first folder's run counts."""
    kept, first, repeats = [], {}, []
    for row in rows:
        key = tuple(row[k] for k in REPEAT_KEYS)
        if key in first:
            repeats.append((first[key], row))
        else:
            first[key] = row
            kept.append(row)
    return kept, repeats


def repeated_runs(repeats: list[tuple[dict, dict]], roots: list[str | Path]) -> list[str]:
    """Each repeated run beside the one that counts: the reproducibility check a rerun makes."""
    def named(row: dict) -> str:  # the run's folder below its root's parent: no machine's paths
        run = Path(row["run"]).resolve()
        root = next(Path(r).resolve() for r in roots if run.is_relative_to(Path(r).resolve()))
        return str(run.relative_to(root.parent))

    if not repeats:
        return []
    return ["", "## Repeated runs", "", "Runs with the same method, task, seed, demos, preset, training steps and strict "
            "episodes as an earlier one: strict success in %; the first counts, the repeat does not.", "",
            "| task | method | seed | counted | repeat |", "|" + " --- |" * 5,
            *(f"| {repeat['task']} | {repeat['policy']} | {repeat['seed']} | {100 * counted['strict']:.1f} "
              f"({named(counted)}) | {100 * repeat['strict']:.1f} ({named(repeat)}) |" for counted, repeat in repeats)]


def recipe_differences(rows: list[dict], labels: list[str]) -> list[str]:
    """For each column whose runs recorded different recipes (e.g. runs of older code mixed with
    newer): the recipe keys that differ and which runs hold which values. Runs that recorded no
    recipe (older than the record) are not compared."""
    lines = []
    for label in labels:
        runs = [r for r in rows if r["label"] == label and r["recipe"]]
        settings = [{k: v for k, v in flatten(r["recipe"]).items() if k not in TASK_SHAPE_KEYS} for r in runs]
        keys = sorted({k for s in settings for k in s if len({repr(other.get(k)) for other in settings}) > 1})
        if not keys:
            continue
        holders: dict[tuple[str, ...], list[dict]] = {}
        for run, setting in zip(runs, settings):
            holders.setdefault(tuple(str(setting.get(k, "–")) for k in keys), []).append(run)
        unrecorded = len(pick(rows, "run", label=label)) - len(runs)
        lines += ["", f"**{label}**: {len(holders)} recipes among {len(runs)} runs"
                  + (f" ({unrecorded} more recorded none)" if unrecorded else ""), "",
                  f"| {' | '.join(keys)} | runs |", "|" + " --- |" * (1 + len(keys))]
        lines += [f"| {' | '.join(values)} | {run_names(members)} |" for values, members in holders.items()]
    return ["", "## Runs that differ in recipe", *lines] if lines else []


def run_names(runs: list[dict]) -> str:
    """Runs of one column named by task and seed: what tells them apart within a column."""
    seeds: dict[str, list[str]] = {}
    for run in runs:
        seeds.setdefault(run["task"], []).append(str(run["seed"]))
    return "; ".join(f"{task} (seed {', '.join(seeds[task])})" for task in sorted(seeds, key=paper_order))


def cost_cell(rows: list[dict], tasks: list[str], label: str) -> str:
    """Median training wall-clock of a method's runs on `tasks` · their median `predict_action` p50."""
    runs = [r for r in rows if r["task"] in tasks and r["label"] == label]
    seconds = average_or_nan([r["train_seconds"] for r in runs], np.median)
    latency = average_or_nan([r["latency_p50_ms"] for r in runs], np.median)
    if np.isnan(seconds) and np.isnan(latency):
        return "–"
    return f"{duration(seconds)} · {'–' if np.isnan(latency) else f'{latency:.1f} ms'}"


def duration(seconds: float) -> str:
    """Minutes up to two hours, hours beyond."""
    if np.isnan(seconds):
        return "–"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def percent_with_errors(counts: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Success % of (successes, episodes) pairs, and their 95% Wilson intervals as the error bars'
    lengths below and above (the interval is not symmetric about the rate)."""
    from mp1.evaluate import wilson_interval

    rates = np.array([successes / episodes for successes, episodes in counts])
    intervals = np.array([wilson_interval(successes, episodes) for successes, episodes in counts]).T
    return 100 * rates, 100 * np.abs(intervals - rates)


def plot_versus_dp3(rows: list[dict], labels: list[str], tasks: list[str], out: Path) -> Path:
    """Per task, each method's strict success (a panel per method) against DP3's at the same demo
    count, pooled over seeds with 95% Wilson intervals as bars: above the diagonal the method is
    ahead."""
    baselines = dp3_baselines(rows, labels)
    groups = groups_of(tasks)
    columns = min(3, len(baselines))
    grid_rows = -(-len(baselines) // columns)
    panel, legend_width = 4.0, 1.4  # inches; square panels, as both axes are success %
    figure, axes = plt.subplots(grid_rows, columns, figsize=(panel * columns + legend_width, panel * grid_rows), squeeze=False)
    for ax, (label, baseline) in zip(axes.flat, baselines.items()):
        for colour, group in enumerate(groups):
            pairs = [(pooled_strict(rows, t, baseline), pooled_strict(rows, t, label)) for t in tasks if task_group(t) == group]
            pairs = [pair for pair in pairs if pair[0][1] and pair[1][1]]
            if pairs:
                (x, x_errors), (y, y_errors) = (percent_with_errors(counts) for counts in zip(*pairs))
                ax.errorbar(x, y, xerr=x_errors, yerr=y_errors, fmt="o", color=f"C{colour}", ms=5, elinewidth=0.6)
        ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--")
        ax.set(xlabel=f"{baseline}: strict success %", ylabel=f"{label}: strict success %", xlim=(-3, 103),
               ylim=(-3, 103), title=f"{label} vs {baseline}")
    for ax in list(axes.flat)[len(baselines):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=f"C{i}", marker="o", ls="", label=group) for i, group in enumerate(groups)]
    panels = panel * columns / (panel * columns + legend_width)
    figure.legend(handles=handles, title="group", fontsize=8, loc="center left", bbox_to_anchor=(panels, 0.5))
    return _save(figure, out, rect=(0, 0, panels, 1))


def plot_summary(rows: list[dict], labels: list[str], tasks: list[str], out: Path) -> Path:
    panels_width, legend_width = max(8, 1.2 * len(tasks) + 4), 2  # inches
    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(panels_width + legend_width, 4))
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        mine = [r for r in rows if r["label"] == label]
        means = [100 * average_or_nan([r["strict"] for r in mine if r["task"] == t]) for t in tasks]
        bars.bar(np.arange(len(tasks)) + i * width, means, width, label=label, color=colours(i))
        latencies = finite([r["latency_p50_ms"] for r in mine])
        if latencies:  # runs without a strict evaluation measured no latency
            scatter.scatter(np.median(latencies), 100 * average_or_nan([r["strict"] for r in mine]), s=60, color=colours(i))
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
        means = [100 * average_or_nan([r["strict"] for r in rows if r["policy"] == variant and r["demos"] == d]) for d in counts]
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
