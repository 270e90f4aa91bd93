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

from mp1.report import collect_runs, strict_gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="benchmarks/results/table37")
    parser.add_argument("--over", type=float, default=15.0, help="margin in points (default 15)")
    parser.add_argument("--methods", nargs=2, default=("mp1-tuned", "dp3"), metavar=("A", "B"))
    args = parser.parse_args()
    found = strict_gaps(collect_runs(args.root), args.over, tuple(args.methods))
    for task, a, b in found:
        print(f"{task}: {args.methods[0]} {a:.0f}% vs {args.methods[1]} {b:.0f}%", file=sys.stderr)
    print(" ".join(task for task, _, _ in found))


if __name__ == "__main__":
    main()
