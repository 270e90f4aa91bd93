"""The `mp1` command. Heavy modules (torch, simulators, plotting) are imported inside the
commands, so that `mp1 --help` and every `mp1 COMMAND --help` answer at once."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import logging
import os
import sys
import tokenize
from pathlib import Path

import mp1

# The evaluation length (mp1.evaluate.DP3_EPISODE_STEPS, checked by the tests), kept here so
# that building the parser imports nothing heavy.
EPISODE_STEPS = 200
# Task sets (mp1.envs.task_sets, checked by the tests), for the help texts.
TASK_SETS = "all34, metaworld34, easy, medium, hard, very_hard, metaworld50, adroit3, all37, cpu-suite"


def settings_help(module: str, class_name: str, names: dict[str, object] | None = None) -> str:
    """One line per field of a config dataclass, `name = default  meaning`, read from its source
    (the comment beside a field, or the block above one that has none; a block above a field
    with its own comment is a section heading) without importing the module. `names` gives the
    values of constants that defaults refer to."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT
    }
    config = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == class_name)
    lines = []
    for node in config.body:
        if not isinstance(node, ast.AnnAssign):
            continue
        above, line = [], node.lineno - 1
        while line in comments and comments[line] and source.splitlines()[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        meaning = comments.get(node.lineno) or " ".join(above)
        if above and node.lineno in comments:
            lines.append(f"  # {' '.join(above)}")
        default = ast.unparse(node.value)
        if isinstance(node.value, ast.Name) and default in (names or {}):
            default = repr(names[default])
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "field":
            factory = next(k.value for k in node.value.keywords if k.arg == "default_factory")
            default = {"dict": "{}", "list": "[]"}.get(ast.unparse(factory), ast.unparse(factory))
        lines.append(f"  {node.target.id + ' = ' + default:<40} {meaning}")
    return "\n".join(lines)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can cause: reported as one `mp1: error:` line. Their modules are loaded by
    then, so importing them here costs nothing."""
    from omegaconf.errors import OmegaConfBaseException

    from mp1.data.demos import DemoGenerationError
    from mp1.envs import MissingExtraError
    from mp1.lock import FolderLockedError
    from mp1.sweep import SweepError

    return (ValueError, FileNotFoundError, DemoGenerationError, OmegaConfBaseException, SweepError, FolderLockedError,
            MissingExtraError)


def cmd_toy(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from tqdm import tqdm

    from mp1.progress import progress_bar

    from mp1.objectives import ConsistencyFlow, Diffusion, FlowMatching, MeanFlow
    from mp1.policies.config import MP1TunedConfig
    from mp1.toy import evaluate_toy, train_toy

    torch.set_num_threads(args.threads)
    runs = [
        ("MeanFlow (MP1), 1 step", MeanFlow(), 1),
        ("MeanFlow (mp1-tuned: x-prediction), 1 step", MP1TunedConfig().objective, 1),
        ("MeanFlow (paper settings), 1 step", MeanFlow.from_preset("meanflow"), 1),
        ("flow matching, 1 step", FlowMatching(), 1),
        ("consistency flow, 1 step", ConsistencyFlow(num_segments=1, second_branch_grad=False), 1),
        ("DDIM, 10 steps", Diffusion(), 10),
    ]
    figure, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 4.2))
    for ax, (title, objective, steps) in zip(axes, progress_bar(runs, desc="training on the toy", unit="objective")):
        net, mixture = train_toy(objective, steps=args.steps, lr=args.lr, seed=args.seed)
        fraction, points, labels = evaluate_toy(objective, net, mixture, steps=steps)
        covered = mixture.modes_covered(points, labels)
        tqdm.write(f"{title:<44} {100 * fraction:5.1f}% of samples on a mode of their condition, "
                   f"{covered}/{mixture.num_modes} modes covered")
        ax.scatter(*points.T, c=labels, s=2, cmap="tab10", vmin=0, vmax=9)
        ax.scatter(*mixture.centers.T, marker="x", c="k", s=40)
        ax.set(title=f"{title}\n{100 * fraction:.0f}% on a correct mode, {covered}/{mixture.num_modes} modes",
               xlim=(-2, 2), ylim=(-2, 2), aspect="equal")
    figure.suptitle("one-step samples on a bimodal conditional toy (colour = condition)")
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


def cmd_bench_latency(args: argparse.Namespace) -> None:
    import torch

    from mp1 import jsonio
    from mp1.bench import format_report, latency_report

    if args.threads:
        torch.set_num_threads(args.threads)
    report = latency_report(
        args.preset, args.device, args.calls, args.warmup, args.train_batch, args.train_steps,
        tuple(args.modes.split(",")), tuple(args.precisions.split(",")),
        tuple(int(n) for n in args.steps.split(",")) if args.steps else (),
    )
    print(jsonio.dumps(report) if args.json else format_report(report))


def cmd_demos(args: argparse.Namespace) -> None:
    from mp1.data.demos import DemoConfig, default_store_path, generate_demos
    from mp1.envs import resolve_env_names

    names = resolve_env_names(args.envs)
    config = DemoConfig(
        episodes=args.episodes, seed=args.seed, num_points=args.num_points, use_rgb=args.rgb, save_images=args.images
    )
    if args.episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {args.episodes}")
    if args.out and len(names) > 1:
        raise ValueError("--out names one store; for several tasks use --out-dir")
    paths = {name: Path(args.out) if args.out else default_store_path(args.out_dir, name, config) for name in names}
    results = generate_demos(names, args.out_dir, config, jobs=args.jobs, paths=paths)
    for r in sorted(results, key=lambda r: names.index(r.env_name)):
        if r.skipped:
            print(f"{r.env_name:<40} exists, skipped: {r.path}")
        else:
            print(f"{r.env_name:<40} kept {r.kept}/{r.attempts} expert episodes, {r.steps} steps -> {r.path}")


def cmd_viz(args: argparse.Namespace) -> None:
    from mp1.viz import plot_episode_clouds, write_episode_video

    out = Path(args.out or Path(args.store).with_suffix("").as_posix() + f"_episode{args.episode}.png")
    print(f"wrote {plot_episode_clouds(args.store, out, args.episode, args.frames)}")
    if args.video:
        print(f"wrote {write_episode_video(args.store, out.with_suffix('.' + args.video), args.episode)}")


def cmd_train(args: argparse.Namespace) -> None:
    from mp1.evaluate import dp3_protocol_label
    from mp1.report import REPORT_FILE
    from mp1.train import Trainer, parse_overrides

    config = parse_overrides(args.overrides)
    if args.show_config:
        from omegaconf import OmegaConf

        from mp1.policies import make_config
        from mp1.policies.config import config_to_dict

        policy = config_to_dict(make_config(config.policy, config.preset, config.model))
        print(OmegaConf.to_yaml({**OmegaConf.to_container(OmegaConf.structured(config)), "model": policy}), end="")
        return
    summary = Trainer(config).train()
    print(f"run folder: {config.run_path}")
    if "strict_protocol" in summary:
        strict = summary["strict_protocol"]
        print(
            f"strict protocol (final EMA, {strict['episodes']} episodes): {100 * strict['success_rate']:.1f}% "
            f"[95% CI {100 * strict['ci95_low']:.1f}-{100 * strict['ci95_high']:.1f}]; "
            f"latency p50 {strict['latency_p50_ms']:.2f} ms, p99 {strict['latency_p99_ms']:.2f} ms on {strict['device']}"
        )
    rollouts = [e for e in summary["periodic_evaluations"] if "success_rate" in e]
    if rollouts:
        print(f"DP3 protocol ({dp3_protocol_label(len(rollouts))}): {100 * summary['dp3_protocol_success']:.1f}%")
    if "validation" in summary:
        validation = summary["validation"]
        print(f"validation (final EMA, {validation['val_episodes']} held-out episodes): "
              f"normalised action MSE {validation['val_mse']:.4f}")
    elif not config.task:
        print("no simulator and no held-out episodes: nothing measured the policy (set val_episodes=N)")
    print(f"report: {config.run_path / REPORT_FILE}")


def cmd_eval(args: argparse.Namespace) -> None:
    from mp1.evaluate import evaluate
    from mp1.policies.policy import read_policy_file
    from mp1.report import evaluation_file, knob_settings, knob_suffix

    if args.jobs < 1 or args.episodes < 1:
        raise ValueError(f"--jobs and --episodes must be at least 1, got {args.jobs} and {args.episodes}")
    target = Path(args.target)
    policy_path = target / "policy_latest.pt" if target.is_dir() else target
    extra = read_policy_file(policy_path)["extra"]
    task = args.task or extra.get("task")
    out_dir = Path(args.out or (target if target.is_dir() else target.parent) / "eval")
    sampling = {"noise_scale": args.noise_scale, "steps": args.steps}
    knobs = knob_suffix(sampling)
    if not task:
        return validate_run(target, policy_path, sampling, out_dir / f"validation{knobs}.json")
    video = str(out_dir / f"eval_seed{args.seed}{knobs}.mp4") if args.video else None
    result = evaluate(
        policy_path, task, args.episodes, args.seed, args.jobs, video, args.max_steps,
        observation=extra.get("observation"), sampling=sampling,
    )
    result.extra = {"policy_file": str(policy_path), "protocol": "strict: one checkpoint, fixed-seed episodes",
                    "sampling": sampling}
    path = out_dir / evaluation_file(args.seed, args.episodes, sampling)
    result.save(path)
    low, high = result.confidence_interval
    settings = "".join(f" {setting}" for setting in knob_settings(sampling))
    print(
        f"{task}{settings}: success {100 * result.success_rate:.1f}% over {args.episodes} episodes "
        f"(strict protocol; 95% CI {100 * low:.1f}-{100 * high:.1f}); "
        f"predict_action p50 {result.latency_p50_ms:.2f} ms, p99 {result.latency_p99_ms:.2f} ms on {result.device}"
    )
    print(f"per-episode results: {path}")


def validate_run(run: Path, policy_path: Path, sampling: dict, out: Path) -> None:
    """`mp1 eval` of a run with no simulated task: the action error on its held-out episodes."""
    from omegaconf import OmegaConf

    from mp1 import jsonio
    from mp1.data import PointCloudDataset
    from mp1.policies import Policy
    from mp1.validation import validation_error

    config = OmegaConf.load(run / "config.yaml") if (run / "config.yaml").exists() else {}
    if not config.get("val_episodes"):
        raise ValueError(
            f"{policy_path} has no simulated task and {run} held out no episodes: pass --task ENV to roll out in a "
            "simulator, or evaluate the folder of a run trained with val_episodes=N"
        )
    policy = Policy.load(policy_path).set_sampling(**sampling)
    c = policy.config
    dataset = PointCloudDataset(config.data_path, c.horizon, c.n_obs_steps, c.n_action_steps, split="val",
                                val_episodes=config.val_episodes, seed=config.demo_seed)
    result = validation_error(policy, dataset, seed=config.seed)
    jsonio.write(out, {**result, "policy_file": str(policy_path), "sampling": sampling}, indent=1)
    print(f"validation on {result['val_episodes']} held-out episodes of {config.data_path}: normalised action MSE "
          f"{result['val_mse']:.4f} (per dimension: {', '.join(f'{v:.4f}' for v in result['val_mse_per_dim'])})")
    print(f"results: {out}")


def cmd_adroit_import_experts(args: argparse.Namespace) -> None:
    from mp1.envs.adroit_experts import import_experts

    for task, path in import_experts(Path(args.source), Path(args.dest) if args.dest else None).items():
        print(f"{task:<8} -> {path}")


def cmd_export(args: argparse.Namespace) -> None:
    from mp1.export import export_onnx, max_difference, onnx_session
    from mp1.policies.policy import Policy, read_policy_file

    payload = read_policy_file(args.policy)
    policy = Policy.from_payload(payload, source=args.policy)
    num_points = args.num_points or (payload["extra"].get("observation") or {}).get("num_points", 512)
    path = export_onnx(policy, args.onnx, num_points, origin=payload["extra"])
    difference = max_difference(policy, onnx_session(path), num_points)
    print(f"wrote {path} (inputs point_cloud, agent_pos, noise; {num_points} points); "
          f"max |onnxruntime - torch| over 3 random inputs: {difference:.1e}")
    if difference > args.tolerance:
        raise ValueError(f"the exported graph differs from torch by {difference:.1e} > {args.tolerance:.0e}")


def cmd_serve(args: argparse.Namespace) -> None:
    from mp1.serving.server import run_server

    try:
        run_server(args.policy, args.host, args.port, args.device, args.seed, args.noise_scale, args.steps, args.token,
                   args.backend, args.threads)
    except KeyboardInterrupt:  # Ctrl-C while the policy was still loading, before the server's own handler
        pass
    print("server stopped", flush=True)
    # Every client is answered and the log flushed: skip the interpreter's teardown, which
    # spends 1-2 s unloading torch, so that a supervisor's stop is prompt.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


def cmd_sampling(args: argparse.Namespace) -> None:
    from mp1.policies.policy import write_sampling_defaults

    if args.noise_scale is None and args.steps is None:
        raise ValueError("give --noise-scale and/or --steps")
    config = write_sampling_defaults(args.policy, args.out, args.noise_scale, args.steps)
    print(f"wrote {args.out or args.policy}: noise_scale {config.noise_scale}, {config.objective.sample_steps} step(s)")


def cmd_report(args: argparse.Namespace) -> None:
    from mp1.report import write_sweep_report

    print(f"wrote {write_sweep_report(args.roots, args.out, args.dev_set or ())}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from mp1.sweep import sweep

    options = dict(OmegaConf.to_container(OmegaConf.from_dotlist(args.slurm)))
    print(f"report: {sweep(args.overrides, args.dir, args.launcher, args.jobs, options, args.dev_set or ())}")


def cmd_import_bag(args: argparse.Namespace) -> None:
    from mp1.data.importers import CloudSettings
    from mp1.data.importers.bag import BagSettings, import_bags, load_camera_poses

    settings = BagSettings(
        tuple(args.depth_topic), args.state_topic, args.action_topic, args.rate, tuple(args.camera_info_topic),
        args.base_frame, load_camera_poses(args.camera_pose, args.depth_topic) if args.camera_pose else {},
        tuple(args.joint_names), args.depth_scale, args.max_gap, args.max_offset,
    )
    for result in import_bags(args.bags, args.out, settings, CloudSettings(args.crop_low, args.crop_high, args.num_points)):
        print(result.summary(), flush=True)
    print(f"store: {args.out}")


def cmd_import_hdf5(args: argparse.Namespace) -> None:
    from mp1.data.importers import CloudSettings
    from mp1.data.importers.hdf5 import HDF5Settings, import_hdf5, load_cameras

    settings = HDF5Settings(load_cameras(args.cameras), tuple(args.state_keys), args.depth_key_suffix)
    for result in import_hdf5(args.file, args.out, settings, CloudSettings(args.crop_low, args.crop_high, args.num_points)):
        print(result.summary(), flush=True)
    print(f"store: {args.out}")


def task_list(text: str) -> list[str]:
    """`a,b,` -> ["a", "b"]: a comma-separated list of tasks on the command line."""
    return [task for task in text.split(",") if task]


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--noise-scale", type=float, help="scale of the initial noise, 0 to 1 (0: deterministic; default: the policy file's)"
    )
    parser.add_argument("--steps", type=int, help="sampling steps, network evaluations per chunk (default: the policy file's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mp1", description=mp1.__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"mp1 {mp1.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    class Commands:  # every sub-command shows its defaults
        @staticmethod
        def add_parser(*args, **kwargs):
            kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
            return subparsers.add_parser(*args, **kwargs)

    commands = Commands()

    toy = commands.add_parser("toy", help="train the objectives on a 2-D bimodal toy and plot one-step samples")
    toy.add_argument("--out", default="outputs/toy.png", help="PNG to write")
    toy.add_argument("--steps", type=int, default=3000, help="Adam steps per objective")
    toy.add_argument("--lr", type=float, default=2e-3)
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--threads", type=int, default=2)
    toy.set_defaults(func=cmd_toy)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True, metavar="BENCH")
    latency = bench.add_parser("latency", help="predict_action latency at batch 1 and training-step cost")
    latency.add_argument("--preset", choices=["cpu", "paper"], default="cpu")
    latency.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    latency.add_argument("--calls", type=int, default=200, help="timed calls per policy")
    latency.add_argument("--warmup", type=int, default=20)
    latency.add_argument("--train-batch", type=int, default=128)
    latency.add_argument("--train-steps", type=int, default=5, help="timed training steps per objective (0: skip)")
    latency.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    latency.add_argument("--modes", default="eager", help="predict_action modes: eager, compile, cuda_graph, onnx (onnxruntime on the CPU)")
    latency.add_argument("--precisions", default="fp32", help="fp32 and/or bf16: inference with the weights cast once, training under autocast")
    latency.add_argument("--steps", default="", help="sampling steps for the flow policies, e.g. 1,2 (default: each policy's own; DP3 keeps its DDIM steps)")
    latency.add_argument("--json", action="store_true", help="print one JSON object")
    latency.set_defaults(func=cmd_bench_latency)
    demos = commands.add_parser("demos", help="generate scripted-expert demonstrations (DP3 zarr layout)")
    demos.add_argument("envs", nargs="+", help=f"e.g. metaworld/button-press, adroit/door, or a set: {TASK_SETS}")
    demos.add_argument("--episodes", type=int, default=10, help="successful episodes to keep per task")
    demos.add_argument("--seed", type=int, default=0)
    demos.add_argument("--out", help="store path (one task only)")
    demos.add_argument("--out-dir", default="data/demos", help="folder for the stores (default: data/demos)")
    demos.add_argument("--jobs", type=int, default=1, help="parallel processes")
    demos.add_argument("--num-points", type=int, default=512)
    demos.add_argument("--rgb", action="store_true", help="XYZRGB point clouds")
    demos.add_argument("--images", action="store_true", help="also store camera images (data/img, data/depth)")
    demos.set_defaults(func=cmd_demos)

    train = commands.add_parser(
        "train", help="train a policy: mp1 train policy=mp1 task=metaworld/button-press preset=cpu seed=0 demos=10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains, evaluates and reports one run. Re-running the same command resumes an interrupted "
        "run.\n\nsettings (key=value, default, meaning):\n" + settings_help("mp1.train", "TrainConfig", {"DP3_EPISODE_STEPS": EPISODE_STEPS})
        + "\n\nPolicy settings go under model., e.g. model.dispersive.weight=0; --show-config lists them all.",
    )
    train.add_argument("overrides", nargs="*", help="key=value")
    train.add_argument("--show-config", action="store_true", help="print the resolved settings, policy's included, and exit")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="success rate (strict protocol) and latency of a run or policy file")
    evaluate.add_argument("target", help="a run folder (uses its policy_latest.pt) or a policy file")
    evaluate.add_argument("--episodes", type=int, default=100)
    evaluate.add_argument("--seed", type=int, default=1000, help="episode i uses env seed SEED + i")
    evaluate.add_argument("--jobs", type=int, default=1, help="parallel rollout processes")
    evaluate.add_argument("--task", help="environment name, when the policy file does not record it")
    evaluate.add_argument(
        "--max-steps", type=int, default=EPISODE_STEPS,
        help=f"episode length ({EPISODE_STEPS}: DP3's Meta-World length, Adroit's horizon; 0: the env's own)",
    )
    evaluate.add_argument("--video", action="store_true", help="write a video of the first episode")
    add_sampling_arguments(evaluate)
    evaluate.add_argument("--out", help="folder for results (default: <run>/eval)")
    evaluate.set_defaults(func=cmd_eval)

    adroit = commands.add_parser("adroit", help="Adroit set-up").add_subparsers(dest="adroit", required=True, metavar="ACTION")
    experts = adroit.add_parser(
        "import-experts", help="re-derive the packaged DAPG expert policies from hand_dapg's pickles (an import takes precedence)"
    )
    experts.add_argument("source", help="a clone of aravindr93/hand_dapg, or a folder of its *-v0.pickle files")
    experts.add_argument("--dest", help="cache folder (default: $MP1_HOME/experts or ~/.cache/mp1/experts)")
    experts.set_defaults(func=cmd_adroit_import_experts)

    sweep = commands.add_parser(
        "sweep", help="train and evaluate many runs: mp1 sweep policy=mp1,flowpolicy,dp3 task=cpu-suite seed=0,1",
        description="Arguments are mp1 train's key=value overrides; comma-separated values (Hydra's sweep syntax, "
        "are swept as a cartesian product; task= accepts set names (cpu-suite, easy, adroit3, all37, ...). "
        "Runs go to joblib's process pool (--launcher local) or to SLURM through submitit (--launcher slurm). "
        "Finished runs are skipped and interrupted ones resume; the report is written at the end (when nothing ran, "
        "only if there is none: mp1 report remakes it).",
    )
    sweep.add_argument("overrides", nargs="*", help="key=value or key=v1,v2,...")
    sweep.add_argument("--dir", required=True, help="sweep folder: one sub-folder per run, report.md at the top")
    sweep.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"])
    sweep.add_argument("--jobs", type=int, default=1, help="runs at a time; locally the CPU threads are split among them")
    sweep.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE",
        help="submitit executor parameter, e.g. --slurm slurm_partition=gpu --slurm timeout_min=240 --slurm gpus_per_node=1",
    )
    sweep.add_argument("--dev-set", type=task_list, metavar="TASKS", help="as mp1 report --dev-set, for the sweep's report")
    sweep.set_defaults(func=cmd_sweep)

    serve = commands.add_parser(
        "serve", help="serve a policy file over a websocket (msgpack frames) for a robot or another process",
        description="One runner (observation history, action chunk) per connection; see mp1.serving.server for the "
        "protocol and mp1.serving.PolicyClient for the client (numpy, msgpack and websockets only).",
    )
    serve.add_argument("policy", help="a policy file (e.g. runs/<task>/<run>/policy_latest.pt)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    serve.add_argument(
        "--backend", default="torch", choices=["torch", "onnx"],
        help="onnx: export the one-step policy at start and run it with onnxruntime (CPU; needs mp1[onnx])",
    )
    serve.add_argument("--seed", type=int, default=0, help="connection i's sampling noise starts from SEED + i")
    serve.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads for the policy (0: the library's default); 1 keeps inference steady on a computer whose "
        "cores also run the robot's drivers and control loop",
    )
    serve.add_argument(
        "--token", help="a shared token every client must send (default: $MP1_SERVE_TOKEN; none: no check, keep to loopback)"
    )
    add_sampling_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    sampling = commands.add_parser(
        "sampling", help="set a policy file's default inference knobs (initial noise scale, sampling steps)",
        description="Rewrites the policy file (or writes a copy with --out) so that eval, serve, the runtime and "
        "ONNX export use these knobs by default; the weights are unchanged.",
    )
    sampling.add_argument("policy", help="a policy file")
    sampling.add_argument("--out", help="write a copy here instead of rewriting POLICY")
    add_sampling_arguments(sampling)
    sampling.set_defaults(func=cmd_sampling)

    export = commands.add_parser(
        "export", help="export a one-step policy to ONNX (normalisation, encoder and network in one graph)",
        description="The noise is an input; the graph is checked against torch with onnxruntime. DP3's 10-step "
        "DDIM loop stays torch-only.",
    )
    export.add_argument("policy", help="a policy file")
    export.add_argument("--onnx", required=True, help="the .onnx file to write")
    export.add_argument("--num-points", type=int, default=0, help="points per cloud (0: what the policy was trained on)")
    export.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |onnxruntime - torch|")
    export.set_defaults(func=cmd_export)

    report = commands.add_parser("report", help="tables (markdown, CSV) and plots over all finished runs in a folder")
    report.add_argument("roots", nargs="+", metavar="root", help="a folder holding run folders (any depth); several are reported as one")
    report.add_argument("--out", help="output folder (default: ROOT; needed for several)")
    report.add_argument(
        "--dev-set", type=task_list, metavar="TASKS",
        help="comma-separated tasks used to choose settings (e.g. metaworld/push,adroit/pen): marked in the tables, "
        "and the headline means and wins against DP3 are also given without them",
    )
    report.set_defaults(func=cmd_report)

    importer = commands.add_parser(
        "import", help="import what a robot recorded (ROS bags, robomimic/LIBERO HDF5) into a store",
        description="One episode per bag or demo, each committed on its own through the recorder; sources the store "
        "already holds are skipped, so an interrupted import resumes when run again. Needs pip install 'mp1[robot]'.",
    ).add_subparsers(dest="source", required=True, metavar="FORMAT")
    cloud_flags = argparse.ArgumentParser(add_help=False)
    cloud_flags.add_argument("--out", required=True, help="the store to create or append to (.zarr)")
    cloud_flags.add_argument("--crop-low", type=float, nargs=3, required=True, metavar=("X", "Y", "Z"),
                             help="workspace box, base frame, metres")
    cloud_flags.add_argument("--crop-high", type=float, nargs=3, required=True, metavar=("X", "Y", "Z"))
    cloud_flags.add_argument("--num-points", type=int, default=1024, help="points per cloud (default 1024)")
    bag = importer.add_parser(
        "bag", parents=[cloud_flags],
        help="ROS 2 bags (sqlite3, MCAP) and ROS 1 .bag files, without a ROS installation",
        description="Streams are resampled to --rate: steps from the latest stream start to the earliest stream end, "
        "each stream holding its latest message (header stamps; receive time for messages without a header). "
        "Refused, in one line: a missing topic, streams whose clocks or time ranges do not line up, a stream "
        "silent for more than --max-gap, depth frames with no valid pixel or in the wrong units, a damaged bag.",
    )
    bag.add_argument("bags", nargs="+", metavar="BAG", help="a ROS 2 bag folder or a ROS 1 .bag file; one episode each")
    bag.add_argument("--depth-topic", action="append", required=True,
                     help="sensor_msgs/Image, 16UC1 (mm) or 32FC1 (m); repeat for more cameras, fused into one cloud")
    bag.add_argument("--camera-info-topic", action="append", default=[],
                     help="one per --depth-topic, in order (default: camera_info beside each depth topic)")
    bag.add_argument("--base-frame", help="TF frame of the robot base: cameras placed by /tf_static and /tf")
    bag.add_argument("--camera-pose", metavar="FILE.yaml",
                     help="camera-to-base poses per depth topic: extrinsics (4x4) or xyz + quaternion (x, y, z, w)")
    bag.add_argument("--state-topic", required=True, help="sensor_msgs/JointState (position) or std_msgs/Float64MultiArray")
    bag.add_argument("--action-topic", required=True, help="the commands: JointState (position) or Float64MultiArray")
    bag.add_argument("--joint-names", type=lambda text: [name for name in text.split(",") if name], default=[],
                     metavar="A,B,...",
                     help="select and order the joints of JointState topics")
    bag.add_argument("--rate", type=float, required=True, help="control rate of the episodes, Hz")
    bag.add_argument("--max-gap", type=float, help="seconds a stream may go without a message (default: 2 / rate)")
    bag.add_argument("--max-offset", type=float, default=1.0, help="seconds a stream's clock may differ from the others' (default 1)")
    bag.add_argument("--depth-scale", type=float, help="metres per unit of 16UC1 images (default 0.001: millimetres)")
    bag.set_defaults(func=cmd_import_bag)
    hdf5 = importer.add_parser(
        "hdf5", parents=[cloud_flags],
        help="robomimic / LIBERO HDF5: data/demo_N/obs/<camera>_depth, obs/<state keys>, actions",
        description="Demos in numeric order. The cameras file gives, per camera: width, height, intrinsics (3x3 or "
        "fx, fy, cx, cy), extrinsics (4x4 camera-to-base, or xyz + quaternion), convention (opencv or opengl), "
        "depth_scale or units (m, mm) or near + far for z-buffer depth, flip_vertical (see mp1.data.importers.hdf5).",
    )
    hdf5.add_argument("file", help="the HDF5 file")
    hdf5.add_argument("--cameras", required=True, metavar="FILE.yaml", help="camera calibration, one entry per camera")
    hdf5.add_argument("--state-keys", type=lambda text: [key for key in text.split(",") if key], required=True,
                      metavar="A,B,...",
                      help="obs keys concatenated into the state, e.g. robot0_joint_pos,robot0_gripper_qpos")
    hdf5.add_argument("--depth-key-suffix", default="_depth", help="a camera's depth is obs/<camera><suffix> (default _depth)")
    hdf5.set_defaults(func=cmd_import_hdf5)

    viz = commands.add_parser("viz", help="plot the point clouds of a demonstration episode")
    viz.add_argument("store", help="a demonstration store (.zarr)")
    viz.add_argument("--episode", type=int, default=0)
    viz.add_argument("--frames", type=int, default=6)
    viz.add_argument("--out", help="PNG to write (default: beside the store)")
    viz.add_argument("--video", choices=["mp4", "gif"], help="also write the camera video (needs a store made with --images)")
    viz.set_defaults(func=cmd_viz)
    return parser


# The extra that installs a module a command may need (pyproject.toml), for the error of an install without it.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "fpsample", "omegaconf"), "runtime"),
    **dict.fromkeys(("diffusers", "mujoco", "metaworld", "gymnasium", "matplotlib", "imageio", "tensorboard", "joblib",
                     "submitit"), "train"),
    **dict.fromkeys(("rosbags", "h5py", "yaml", "zarr"), "robot"),
    **dict.fromkeys(("onnx", "onnxscript", "onnxruntime"), "onnx"),
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").partition(".")[0] in EXTRA_OF_MODULE:
            extra = EXTRA_OF_MODULE[error.name.partition(".")[0]]
            sys.exit(f"mp1: error: this command needs {error.name}, which this install lacks: "
                     f"pip install 'mp1[{extra}]' (or 'mp1[all]')")
        if isinstance(error, user_errors()):  # ExpertFileError and PolicyFileError are ValueErrors
            sys.exit(f"mp1: error: {error}")
        raise
