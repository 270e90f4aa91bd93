"""MeanFlow's levers on the 2-D toy (`mp1 toy` settings: 3000 Adam steps, lr 2e-3, batch 256),
several training seeds each: the fraction of one-step samples on a mode of their condition and
how many of the 8 modes get samples. A benchmark, not a test; results in docs/objectives.md.

    python benchmarks/toy_levers.py [--seeds 0,1,2] [--steps 3000] [--lr 2e-3]
"""

from __future__ import annotations

import argparse
import time

import torch

from mp1.objectives import MeanFlow
from mp1.toy import evaluate_toy, train_toy

VARIANTS = {  # name: MeanFlow arguments over MP1's settings
    "MP1 (= mp1-tuned's objective before prediction=x)": {},
    "prediction=x": {"prediction": "x"},
    "prediction=x, equal_times_fraction=0.25": {"prediction": "x", "equal_times_fraction": 0.25},
    "adaptive_weight_power=1": {"adaptive_weight_power": 1.0},
    "equal_times_fraction=0.25": {"equal_times_fraction": 0.25},
    "equal_times_fraction=0.75": {"equal_times_fraction": 0.75},
    "time_mean=0": {"time_mean": 0.0},
    "guidance_weight=1.5": {"guidance_weight": 1.5},
    "guidance_weight=3": {"guidance_weight": 3.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'variant':<52} {'mean':>6}  per seed (on-mode %, modes covered)")
    for name, settings in VARIANTS.items():
        started, results = time.perf_counter(), []
        for seed in seeds:
            objective = MeanFlow(**settings)
            net, mixture = train_toy(objective, steps=args.steps, lr=args.lr, seed=seed)
            fraction, points, labels = evaluate_toy(objective, net, mixture, steps=1)
            results.append((100 * fraction, mixture.modes_covered(points, labels)))
        mean = sum(r[0] for r in results) / len(results)
        per_seed = ", ".join(f"{f:.1f}% {m}/8" for f, m in results)
        print(f"{name:<52} {mean:5.1f}%  {per_seed}  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
