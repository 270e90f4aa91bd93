"""The tasks of the 37-task table where the two methods differ by more than a margin in strict
success (issue #22: "a second seed for every task where the two differ by more than 15 points"),
read from the table's runs, so the list of second seeds follows the rule, not a hand-picked one.

    python benchmarks/table37_gaps.py [DIR] [--over 15] [--methods mp1-tuned dp3]

Prints the tasks, space-separated in the paper's order (for table37.sh's TASKS), and each task's
numbers on stderr.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mp1.report import average_or_nan, collect_runs, paper_order, pick


def gaps(root: str, over: float, methods: tuple[str, str]) -> list[tuple[str, float, float]]:
    """(task, first method's strict %, second's; each the mean over its seeds) for each task where
    both have a strict evaluation and they differ by more than `over` points."""
    rows = collect_runs(root)
    found = []
    for task in sorted({r["task"] for r in rows}, key=paper_order):
        # rounded: 100 * 0.45 is 45.00000000000001, and 60 - 45 must not exceed 15
        a, b = (round(100 * average_or_nan(pick(rows, "strict", task=task, policy=m)), 6) for m in methods)
        if not (np.isnan(a) or np.isnan(b)) and abs(a - b) > over:
            found.append((task, a, b))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="benchmarks/results/table37")
    parser.add_argument("--over", type=float, default=15.0, help="margin in points (default 15)")
    parser.add_argument("--methods", nargs=2, default=("mp1-tuned", "dp3"), metavar=("A", "B"))
    args = parser.parse_args()
    found = gaps(args.root, args.over, tuple(args.methods))
    for task, a, b in found:
        print(f"{task}: {args.methods[0]} {a:.0f}% vs {args.methods[1]} {b:.0f}%", file=sys.stderr)
    print(" ".join(task for task, _, _ in found))


if __name__ == "__main__":
    main()
