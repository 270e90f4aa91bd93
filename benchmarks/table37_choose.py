"""Issue #22's choice, made by the rule written down on 2026-12-03 before any lever ran
(benchmarks/README.md, "The rule the choice follows") from the runs as they stand, so that the
recipe run on all 37 tasks is the rule's, not a reading of the numbers after the fact.

A method's number is its strict success over the development tasks, per task the mean of seeds 0
and 1 (the table's folders table37/, table37-seed1/, table37-rerun/ and the levers'
table37-lever-*/ under RESULTS).

(a) Inference knobs: of mp1-tuned's plain one step, noise 0.5 and 2 steps, the best becomes the
    default if it leads the plain one step by more than 2 points (noise 0 is out whatever it
    scores: it gives up the toy's modes).
(b) Training levers (every variant of table37_levers.sh, all of which must have run), each sampled
    with the knob (a) chose: a variant replaces the recipe it changes if it leads that recipe by
    more than 2 points (the best such variant; variants are not stacked, a stack was never
    measured), and only if the 2-D toy keeps all 8 modes with at least 85% of samples on one
    (benchmarks/results/toy_training_levers.txt, sampled as (a) chose). DP3's variant of the
    learning-rate lever replaces DP3's recipe by the same margin, so that the comparison stays
    fair. The regression head is a diagnostic, never a recipe.
(c) The issue's targets for the chosen recipe, against DP3's (itself if (b) changed it), on the
    tasks outside the development set at seed 0 (the table's runs, a rerun's where it re-made a
    policy file for the knobs, or table37-chosen/POLICY/'s where (b) changed a recipe): mean
    strict success at least DP3's + 3 points, no difficulty group more than 5 points behind,
    `predict_action` p50 (median over those tasks' strict rollouts) at most 1/5 of DP3's with
    one step, 1/3 with two, and the 2-D toy's bar (b) uses, for the chosen recipe sampled with (a)'s
    knob. Margins compare whole episodes: exactly 2 points is not more than 2.

    python benchmarks/table37_choose.py [RESULTS] --dev-set "TASK ..."            the choice and the targets
    python benchmarks/table37_choose.py [RESULTS] --dev-set "TASK ..." --knob     (a) as `mp1 eval`'s result
        suffix (steps2), nothing for the plain one step
    python benchmarks/table37_choose.py [RESULTS] --dev-set "TASK ..." --recipes  (b): a line per recipe that
        changes, its policy and training settings (key=value); nothing when the table's recipes stand
    python benchmarks/table37_choose.py [RESULTS] --dev-set "TASK ..." --progress  the lever runs (b) has so far

Exit status 3 while the rule cannot decide (a method it compares lacks a seed on a development
task, or a variant that leads has no toy result) or, without --knob and --recipes, while a
held-out task lacks a run of the chosen recipe; what is missing is said on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from mp1.report import REPEAT_KEYS, collect_runs, flatten, group_members, paper_order, run_overrides, variant_name

MARGIN = 0.02  # more than 2 points: about the standard error of a difference over 800 paired episodes
SEEDS = (0, 1)
RECIPE, BASELINE = "mp1-tuned", "dp3"
KNOBS = ("noise_scale=0.5", "steps=2")
TABLE_FOLDERS = ("table37", "table37-seed1", "table37-rerun")
# table37_levers.sh's variants, each lever in table37-lever-LEVER/, as `mp1 report` names them (a test
# checks that the two agree)
LEVERS = {
    "boundary": ("mp1-tuned[objective.boundary_fraction=0.25]", "mp1-tuned[objective.boundary_fraction=0.5]"),
    "time": ("mp1-tuned[objective.time_distribution=uniform]",),
    "lr": ("mp1-tuned[train_lr=0.0001]", "dp3[train_lr=0.0003]"),
    "regression": ("regression",),  # a diagnostic, never a recipe
}
TOY_RESULTS = Path(__file__).resolve().parent / "results" / "toy_training_levers.txt"
TOY_MODES, TOY_ON_MODE = 8, 85.0
TARGET_LEAD, TARGET_GROUP_GAP = 0.03, 0.05  # (c): mean over held-out tasks, each difficulty group
LATENCY_SHARE = {1: 1 / 5, 2: 1 / 3}  # (c): at most this share of DP3's latency, by sampling steps
UNDECIDED = 3
SEED_ERROR_NOTE = ("+- (seeds): the lead's standard error from how much seeds 0 and 1 disagree about it, task by "
                   "task (the noise of training runs; a rough estimate from few pairs); for the reader, the rule "
                   "decides by its margin alone.")


class Undecided(Exception):
    """The rule needs a result that is not there yet (`lines`: the choice's tables so far)."""

    lines: tuple[str, ...] = ()


def above(value: float, bound: float) -> bool:
    """value > bound for success rates, whose differences are whole episodes over 800 and more:
    rounded, so that a lead of exactly 2 points is not more than 2 by a float's last bit."""
    return round(value - bound, 9) > 0


def choice_folders(results: Path) -> dict[str, Path]:
    """The folders the choice reads, by name: the table's and the levers'."""
    return {name: results / name for name in TABLE_FOLDERS} | {lever: results / f"table37-lever-{lever}" for lever in LEVERS}


def load(folders: dict[str, Path]) -> list[dict]:
    """Each run's rows (its own strict evaluation and its knobs'), each with its `variant` (the
    run's own label). Of runs repeated with the same settings and seed (table37-rerun/ re-made
    policy files for the knobs), the one with the most knob evaluations counts, so that a knob is
    compared with the same weights' one step."""
    by_run: dict[str, list[dict]] = {}
    for folder in folders.values():
        for row in collect_runs(folder) if folder.is_dir() else []:
            by_run.setdefault(row["run"], []).append(row)
    counted: dict[tuple, str] = {}
    for run, run_rows in by_run.items():
        own = next(row for row in run_rows if not row["sampling"])
        for row in run_rows:
            row["variant"] = own["policy"]
        key = tuple(own[k] for k in REPEAT_KEYS)
        if key not in counted or len(run_rows) > len(by_run[counted[key]]):
            counted[key] = run
    return [row for run in counted.values() for row in by_run[run]]


def strict_results(rows: list[dict], variant: str, sampling: str, dev: list[str]) -> np.ndarray:
    """Strict success per development task (rows) and seed (columns, SEEDS)."""
    named = f"{variant} sampled with {sampling}" if sampling else variant
    table = []
    for task in dev:
        by_seed: dict[int, list[float]] = {}
        for r in rows:
            if (r["task"], r["variant"], r["sampling"]) == (task, variant, sampling) and not np.isnan(r["strict"]):
                by_seed.setdefault(r["seed"], []).append(r["strict"])
        missing = [seed for seed in SEEDS if seed not in by_seed]
        if missing:
            raise Undecided(f"{named}: no strict result of seed {', '.join(map(str, missing))} on {task}")
        if any(len(by_seed[seed]) > 1 for seed in SEEDS):
            raise Undecided(f"{named}: two runs of one seed on {task} that are not repeats (another step count, "
                            "demo count or episode count): say which counts")
        table.append([by_seed[seed][0] for seed in SEEDS])
    return np.array(table)


def seed_error(lead: np.ndarray) -> float:
    """The standard error of a development score (per task, the mean of seeds 0 and 1: `lead` holds
    a task per row, a seed per column; a lead, one recipe's results minus another's), estimated from
    how much the two seeds disagree, task by task: the training runs' noise, which 50 episodes of one
    run do not show. A rough estimate from 8 pairs, for the reader: the rule decides by its margin."""
    return float(np.sqrt(np.sum((lead[:, 0] - lead[:, 1]) ** 2)) / (2 * len(lead)))


def choose_knob(rows: list[dict], dev: list[str]) -> tuple[str, list[str]]:
    """Rule (a): the knob that becomes the default ("" for the plain one step), and its table."""
    results = {knob: strict_results(rows, RECIPE, knob, dev) for knob in ("", *KNOBS)}
    scores = {knob: float(r.mean()) for knob, r in results.items()}
    best = max(KNOBS, key=scores.get)
    chosen = best if above(scores[best] - scores[""], MARGIN) else ""
    lines = ["## (a) Inference knobs", "", f"| {RECIPE} sampled with | development set | lead over one step | +- (seeds) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {knob or 'one step, noise 1'} | {100 * scores[knob]:.1f} | {100 * (scores[knob] - scores['']):+.2f} | "
              f"{100 * seed_error(r - results['']):.2f} |" for knob, r in results.items()]
    verdict = f"**{chosen}** becomes the policy file's default" if chosen else "the plain one step stays"
    return chosen, lines + ["", SEED_ERROR_NOTE, "", f"Chosen: {verdict} (a knob needs a lead of more than "
                                                     f"{100 * MARGIN:.0f} points)."]


def progress(rows: list[dict], dev: list[str]) -> list[str]:
    """What (b) has of its inputs so far: per lever variant, the development runs (task and seed)
    with a strict result, as trained and, for mp1-tuned's variants, sampled with (a)'s knob."""
    try:
        knob = choose_knob(rows, dev)[0]
    except Undecided:
        knob = ""  # (a) waits too: the runs as trained are what there is to count
    lines = ["| lever variant | sampled with | development runs with a result |", "| --- | --- | --- |"]
    for variants in LEVERS.values():
        for variant in variants:
            for sampling in ("", knob) if knob and variant.startswith(RECIPE) else ("",):
                have = {(r["task"], r["seed"]) for r in rows if (r["variant"], r["sampling"]) == (variant, sampling)
                        and r["task"] in dev and r["seed"] in SEEDS and not np.isnan(r["strict"])}
                lines.append(f"| {variant} | {sampling or 'as trained'} | {len(have)} of {len(dev) * len(SEEDS)} |")
    return lines


def settings_of(rows: list[dict], variant: str) -> list[str]:
    """A variant's training settings as `model.key=value` words, from one of its runs."""
    run = Path(next(r["run"] for r in rows if r["variant"] == variant))
    overrides = run_overrides(json.loads((run / "final.json").read_text()), run)
    return [f"model.{key}={value}" for key, value in flatten(overrides).items()]


def label_of(recipe: str, settings: list[str]) -> str:
    """The label `mp1 report` gives a recipe trained with these settings."""
    return variant_name(recipe, {}, [setting.removeprefix("model.") for setting in settings])


def sampling_steps(knob: str) -> int:
    """The network evaluations per chunk with (a)'s knob ("" or a noise scale: one)."""
    return int(knob.removeprefix("steps=")) if knob.startswith("steps=") else 1


def toy_name(settings: list[str]) -> str:
    """How benchmarks/toy_levers.py --training names a variant of mp1-tuned's objective."""
    return ", ".join(key.split(".")[-1] + "=" + value for key, value in (s.split("=", 1) for s in settings)) or RECIPE


def toy_result(settings: list[str], knob: str, toy_results: Path) -> tuple[float, list[int]]:
    """The 2-D toy with this variant, sampled as (a) chose: its line in the toy's results (on-mode
    share, mean over the toy's seeds, and each seed's modes covered)."""
    steps = sampling_steps(knob)
    noise = f", noise {float(knob.removeprefix('noise_scale=')):g}" if knob.startswith("noise_scale=") else ""
    name = toy_name(settings)
    pattern = re.compile(rf"^{re.escape(name)}, {steps} steps?{re.escape(noise)}\s+([\d.]+)%\s+(.*)$")
    for line in toy_results.read_text().splitlines():
        found = pattern.match(line)
        if found:
            return float(found.group(1)), [int(m) for m in re.findall(rf"(\d+)/{TOY_MODES}", found.group(2))]
    raise Undecided(f"no toy result for {name} at {steps} step(s){noise} in {toy_results.name}: "
                    f"measure it (benchmarks/toy_levers.py --training --only {name}, a lever named there)")


def toy_passes(on_mode: float, modes: list[int]) -> bool:
    """The issue's bar: every mode covered in every seed, at least 85% of samples on a mode."""
    return on_mode >= TOY_ON_MODE and bool(modes) and all(m == TOY_MODES for m in modes)


def choose_recipes(rows: list[dict], dev: list[str], knob: str,
                   toy_results: Path = TOY_RESULTS) -> tuple[dict[str, list[str]], list[str]]:
    """Rule (b): per policy whose recipe changes, its new training settings; and the table."""
    lines = ["## (b) Training levers", "", "| variant | sampled with | development set | recipe it changes | lead | +- (seeds) |",
             "| --- | --- | --- | --- | --- | --- |"]
    changed, notes = {}, ["", SEED_ERROR_NOTE]
    try:
        leads = {}
        for recipe in (RECIPE, BASELINE):
            sampling = knob if recipe == RECIPE else ""
            base = strict_results(rows, recipe, sampling, dev)
            variants = {variant: strict_results(rows, variant, sampling, dev) for lever in LEVERS.values()
                        for variant in lever if variant.split("[")[0] == recipe}
            leads[recipe] = {variant: float(results.mean() - base.mean()) for variant, results in variants.items()}
            lines += [f"| {variant} | {sampling or 'as trained'} | {100 * results.mean():.1f} | {100 * base.mean():.1f} | "
                      f"{100 * leads[recipe][variant]:+.2f} | {100 * seed_error(results - base):.2f} |"
                      for variant, results in variants.items()]
        lines += [f"| {variant} (diagnostic) | as trained | {100 * strict_results(rows, variant, '', dev).mean():.1f} | – | – | – |"
                  for variant in LEVERS["regression"]]
        for recipe, lead in leads.items():
            for variant in sorted((v for v in lead if above(lead[v], MARGIN)), key=lead.get, reverse=True):
                settings = settings_of(rows, variant)
                if recipe == BASELINE or toy_passes(*toy_result(settings, knob, toy_results)):
                    changed[recipe] = settings
                    break
                notes.append(f"{variant} leads but fails the toy ({TOY_MODES} of 8 modes, >= {TOY_ON_MODE:.0f}% on a mode).")
    except Undecided as missing:
        missing.lines = (*lines, *notes)
        raise
    toy = f" (the toy sampled with {knob or 'one step'}: {TOY_MODES} of 8 modes, >= {TOY_ON_MODE:.0f}% on a mode)"
    verdicts = [f"{recipe} trains with {' '.join(settings)}{toy * (recipe == RECIPE)}" for recipe, settings in changed.items()]
    return changed, lines + [*notes, f"Chosen: {'; '.join(verdicts) or 'the table recipes stand'}."]


def check_targets(results: Path, dev: list[str], knob: str, changed: dict[str, list[str]],
                  toy_results: Path = TOY_RESULTS) -> list[str]:
    """(c): the chosen recipe against DP3 on the held-out tasks, seed 0, and the issue's targets."""
    folders = {name: results / name for name in TABLE_FOLDERS if name != "table37-seed1"}
    rows = load(folders | {f"chosen {recipe}": results / "table37-chosen" / recipe for recipe in changed})
    rows = [r for r in rows if r["seed"] == 0 and not np.isnan(r["strict"])]
    mine = (label_of(RECIPE, changed.get(RECIPE, [])), knob)
    theirs = (label_of(BASELINE, changed.get(BASELINE, [])), "")
    held_out = sorted({r["task"] for r in rows if "table37-chosen/" not in r["run"]} - set(dev), key=paper_order)
    if not held_out:
        raise Undecided("no task outside the development set has a run in the table")
    picked = {}
    for task in held_out:
        for variant, sampling in (mine, theirs):
            found = [r for r in rows if (r["task"], r["variant"], r["sampling"]) == (task, variant, sampling)]
            if not found:
                where = "table37-chosen/: the plan's step 5" if variant.endswith("]") else "the table"
                raise Undecided(f"{variant}{f' sampled with {sampling}' if sampling else ''} has no strict result of "
                                f"seed 0 on {task} ({where})")
            picked[task, variant] = found[0]

    def mean(variant: str, tasks: list[str]) -> float:
        return float(np.mean([picked[task, variant]["strict"] for task in tasks]))

    steps = sampling_steps(knob)
    named = f"{mine[0]}{f' sampled with {knob}' if knob else ''}"
    lines = [f"## (c) The targets: {named} against {theirs[0]}, {len(held_out)} held-out "
             f"task{'s' * (len(held_out) != 1)}, seed 0", "",
             "| group | tasks | chosen | DP3 | difference |", "| --- | --- | --- | --- | --- |"]
    gaps = {}
    for group, members in group_members(held_out).items():
        gaps[group] = mean(mine[0], members) - mean(theirs[0], members)
        lines.append(f"| {group} | {len(members)} | {100 * mean(mine[0], members):.1f} | "
                     f"{100 * mean(theirs[0], members):.1f} | {100 * gaps[group]:+.1f} |")
    latency = {variant: float(np.nanmedian([picked[task, variant]["latency_p50_ms"] for task in held_out]))
               for variant, _ in (mine, theirs)}
    share = latency[mine[0]] / latency[theirs[0]]
    on_mode, modes = toy_result(changed.get(RECIPE, []), knob, toy_results)
    worst = min((g for g in gaps if g != "all"), key=gaps.get)
    met = {True: "**met**", False: "**not met**"}
    return lines + ["",
        f"- Mean over the held-out tasks: {100 * gaps['all']:+.1f} points over DP3 (target >= +{100 * TARGET_LEAD:.0f}): "
        f"{met[not above(TARGET_LEAD, gaps['all'])]}.",
        f"- Worst group: {worst}, {100 * gaps[worst]:+.1f} points (target: none more than {100 * TARGET_GROUP_GAP:.0f} "
        f"behind): {met[not above(-TARGET_GROUP_GAP, gaps[worst])]}.",
        f"- `predict_action` p50, median over the held-out strict rollouts: {latency[mine[0]]:.1f} ms against DP3's "
        f"{latency[theirs[0]]:.1f} ms, 1/{1 / share:.1f} (target at {steps} step{'s' * (steps > 1)}: at most "
        f"1/{1 / LATENCY_SHARE[steps]:.0f}): {met[share <= LATENCY_SHARE[steps]]}. Rollouts share a loaded machine; "
        "benchmarks/README.md has the quiet `mp1 bench latency` measure.",
        f"- The 2-D toy ({toy_results.name}, {toy_name(changed.get(RECIPE, []))} sampled with {knob or 'one step'}): "
        f"{on_mode:.1f}% of samples on a mode, modes per seed {', '.join(f'{m}/{TOY_MODES}' for m in modes)} (target: "
        f"all {TOY_MODES}, >= {TOY_ON_MODE:.0f}%): {met[toy_passes(on_mode, modes)]}."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results", type=Path)
    parser.add_argument("--dev-set", required=True, help="the development tasks, space- or comma-separated")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--knob", action="store_true", help="print rule (a)'s knob only")
    output.add_argument("--recipes", action="store_true", help="print rule (b)'s changed recipes only")
    output.add_argument("--progress", action="store_true", help="count the lever runs (b) has so far")
    args = parser.parse_args()
    dev = args.dev_set.replace(",", " ").split()
    rows = load(choice_folders(args.results))
    if not rows:
        parser.error(f"no finished runs of the plan's folders under {args.results}")
    if args.progress:
        print("\n".join(progress(rows, dev)))
        return
    lines = [f"# Issue #22's choice, by the rule of 2026-12-03 ({len(dev)} development "
             f"task{'s' * (len(dev) != 1)}, seeds 0 and 1)", ""]
    try:
        knob, knob_lines = choose_knob(rows, dev)
        lines += knob_lines + [""]
        if args.knob:
            print(knob.replace("=", ""))
            return
        recipes, recipe_lines = choose_recipes(rows, dev, knob)
        lines += recipe_lines + [""]
        if not args.recipes:
            lines += check_targets(args.results, dev, knob, recipes)
    except Undecided as missing:
        if not (args.knob or args.recipes):  # the report so far, for the reader; the reason on stderr too
            print("\n".join([*lines, *missing.lines, f"**Undecided**: {missing}."]))
        print(f"undecided: {missing}", file=sys.stderr)
        sys.exit(UNDECIDED)
    if args.recipes:
        for recipe, settings in recipes.items():  # none changed: no line at all (step 5 then trains nothing)
            print(recipe, *settings)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
