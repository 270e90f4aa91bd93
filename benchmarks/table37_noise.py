"""How much of issue #22's development-set numbers is noise: what a margin of the choice rule
(benchmarks/table37_choose.py) can tell apart.

- Within a run, the episodes: each inference knob against the plain one step of the same weights on
  the same episodes, paired episode by episode (its standard error over the pairs).
- Between runs, the training: how far the two seeds of each development task's run differ, as a
  per-task standard deviation, and what that makes the standard error of a 16-run score and of
  the lead of one recipe's trainings over another's (independent runs; runs of one seed that move
  together make it smaller, which `table37_choose.py`'s `+- (seeds)` column measures).

    python benchmarks/table37_noise.py [RESULTS] --dev-set "TASK ..."   (results/table37_noise.txt)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mp1.report import evaluation_file

import table37_choose as choose  # beside this script, which Python puts first on the path


def knob_pairs(rows: list[dict], task: str, seed: int, knob: str) -> np.ndarray:
    """Per episode of mp1-tuned's counted run of this task and seed, the knob's success minus the
    strict evaluation's, on the same episodes (checked by their environment seeds)."""
    row = next(r for r in rows if (r["task"], r["seed"], r["variant"], r["sampling"]) == (task, seed, choose.RECIPE, ""))
    run = Path(row["run"])
    strict = json.loads((run / "final.json").read_text())["strict_protocol"]
    knobbed = evaluation_file(strict["seed"], strict["episodes"], dict([knob.split("=")]))
    plain, sampled = (json.loads((run / "eval" / name).read_text())["per_episode"] for name in ("final_episodes.json", knobbed))
    if [e["env_seed"] for e in plain] != [e["env_seed"] for e in sampled]:
        raise ValueError(f"{run}: {knobbed} was not evaluated on the strict evaluation's episodes")
    return np.array([e["success"] for e in sampled], float) - np.array([e["success"] for e in plain], float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results", type=Path)
    parser.add_argument("--dev-set", required=True, help="the development tasks, space- or comma-separated")
    args = parser.parse_args()
    dev = args.dev_set.replace(",", " ").split()
    rows = choose.load(choose.choice_folders(args.results))
    print("Within runs (episodes): each knob against the same weights' one step, paired")
    for knob in choose.KNOBS:
        pairs = [knob_pairs(rows, task, seed, knob) for task in dev for seed in choose.SEEDS]
        lead = np.mean([p.mean() for p in pairs])
        error = np.sqrt(sum(p.var(ddof=1) / len(p) for p in pairs)) / len(pairs)
        won, lost = sum(int((p > 0).sum()) for p in pairs), sum(int((p < 0).sum()) for p in pairs)
        print(f"  {knob:<16} lead {100 * lead:+.2f} points, standard error {100 * error:.2f} "
              f"({won} episodes won, {lost} lost of {sum(len(p) for p in pairs)})")
    print("Between runs (training): seeds 0 and 1 of the table's development runs")
    for recipe in (choose.RECIPE, choose.BASELINE):
        results = choose.strict_results(rows, recipe, "", dev)
        deviation = np.sqrt(np.mean((results[:, 0] - results[:, 1]) ** 2 / 2))
        score_error = choose.seed_error(results)
        print(f"  {recipe:<16} per-task standard deviation {100 * deviation:.1f} points; standard error of its "
              f"{results.size}-run score {100 * score_error:.1f}, of a lead between two such scores "
              f"{100 * score_error * np.sqrt(2):.1f}")


if __name__ == "__main__":
    main()
