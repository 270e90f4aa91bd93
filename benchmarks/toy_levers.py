"""MeanFlow's levers on the 2-D toy (`mp1 toy` settings: 3000 Adam steps, lr 2e-3, batch 256),
several training seeds each: the fraction of one-step samples on a mode of their condition and
how many of the 8 modes get samples. A benchmark, not a test; results in docs/objectives.md.

    python benchmarks/toy_levers.py [--seeds 0,1,2] [--steps 3000] [--lr 2e-3]

With `--knobs`, it trains mp1-tuned's objective instead and samples the same networks with each
inference knob (initial noise scale, sampling steps) that issue #22 studies on Meta-World: what a
knob costs where the data is multimodal. With `--training`, issue #22's training levers over
mp1-tuned's objective (the share of one-step boundary pairs, the time distribution, and the
deterministic regression head, the learning rate), each sampled with 1 step, 1 step at noise 0.5
and 2 steps; `--only NAME,...` trains some of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from mp1.objectives import MeanFlow, Regression
from mp1.policies.config import MP1TunedConfig
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
KNOBS = {  # name: (sampling steps, initial noise scale)
    "1 step, noise 1 (the default)": (1, 1.0),
    "1 step, noise 0.5": (1, 0.5),
    "1 step, noise 0": (1, 0.0),
    "2 steps, noise 1": (2, 1.0),
    "2 steps, noise 0.5": (2, 0.5),
}

# name: MeanFlow arguments over mp1-tuned's objective (and `train_lr`, which scales the toy's
# learning rate as it scales mp1-tuned's: 1e-4 trains at a third of --lr); None: the regression head
TRAINING_LEVERS = {
    "mp1-tuned": {},
    "boundary_fraction=0.25": {"boundary_fraction": 0.25},
    "boundary_fraction=0.5": {"boundary_fraction": 0.5},
    "time_distribution=uniform": {"time_distribution": "uniform"},
    "train_lr=0.0001": {"train_lr": 1e-4},
    "regression (deterministic head)": None,
}


def row(name: str, results: list[tuple[float, int]], seconds: float | None = None) -> str:
    mean = sum(r[0] for r in results) / len(results)
    per_seed = ", ".join(f"{f:.1f}% {m}/8" for f, m in results)
    return f"{name:<52} {mean:5.1f}%  {per_seed}" + (f"  ({seconds:.0f} s)" if seconds is not None else "")


def levers(seeds: list[int], steps: int, lr: float) -> None:
    for name, settings in VARIANTS.items():
        started, results = time.perf_counter(), []
        for seed in seeds:
            objective = MeanFlow(**settings)
            net, mixture = train_toy(objective, steps=steps, lr=lr, seed=seed)
            fraction, points, labels = evaluate_toy(objective, net, mixture, steps=1)
            results.append((100 * fraction, mixture.modes_covered(points, labels)))
        print(row(name, results, time.perf_counter() - started), flush=True)


def knobs(seeds: list[int], steps: int, lr: float) -> None:
    """mp1-tuned's objective, trained once per seed, sampled with every knob setting."""
    started, objective = time.perf_counter(), MP1TunedConfig().objective
    trained = [train_toy(objective, steps=steps, lr=lr, seed=seed) for seed in seeds]
    print(f"(trained in {time.perf_counter() - started:.0f} s; each row samples the same networks)")
    for name, (sample_steps, noise_scale) in KNOBS.items():
        results = []
        for net, mixture in trained:
            fraction, points, labels = evaluate_toy(objective, net, mixture, steps=sample_steps, noise_scale=noise_scale)
            results.append((100 * fraction, mixture.modes_covered(points, labels)))
        print(row(f"mp1-tuned, {name}", results), flush=True)


def training_levers(seeds: list[int], steps: int, lr: float, only: list[str]) -> None:
    """Each training lever (or those in `only`), trained once per seed, sampled as each candidate
    of issue #22's inference knob would sample it: 1 step, 1 step at noise 0.5, 2 steps (the
    regression head makes one deterministic evaluation: its other rows would repeat the first)."""
    recipe = MP1TunedConfig()
    for name, settings in TRAINING_LEVERS.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        settings = None if settings is None else dict(settings)  # a copy: `train_lr` is taken out of it
        lr_here = lr if settings is None else lr * settings.pop("train_lr", recipe.train_lr) / recipe.train_lr
        objective = Regression() if settings is None else dataclasses.replace(recipe.objective, **settings)
        trained = [train_toy(objective, steps=steps, lr=lr_here, seed=seed) for seed in seeds]
        samplings = [(1, 1.0)] if settings is None else [(1, 1.0), (1, 0.5), (2, 1.0)]
        for sample_steps, noise_scale in samplings:
            results = []
            for net, mixture in trained:
                fraction, points, labels = evaluate_toy(objective, net, mixture, steps=sample_steps, noise_scale=noise_scale)
                results.append((100 * fraction, mixture.modes_covered(points, labels)))
            label = f"{name}, {sample_steps} step{'s' * (sample_steps > 1)}" + (f", noise {noise_scale:g}" if noise_scale != 1 else "")
            seconds = time.perf_counter() - started if noise_scale == 1 and sample_steps == 1 else None  # training's time
            print(row(label, results, seconds), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    study = parser.add_mutually_exclusive_group()
    study.add_argument("--knobs", action="store_true", help="mp1-tuned's inference knobs instead of MeanFlow's levers")
    study.add_argument("--training", action="store_true", help="issue #22's training levers over mp1-tuned's objective")
    parser.add_argument("--only", default="", help="with --training: these levers only (names, comma-separated)")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = [name for name in only if name not in TRAINING_LEVERS]
    if unknown or (only and not args.training):
        parser.error(f"--only takes --training's names ({', '.join(TRAINING_LEVERS)}), got {', '.join(only)}")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'variant':<52} {'mean':>6}  per seed (on-mode %, modes covered)")
    if args.training:
        training_levers(seeds, args.steps, args.lr, only)
    else:
        (knobs if args.knobs else levers)(seeds, args.steps, args.lr)


if __name__ == "__main__":
    main()
