"""Depth frame to policy cloud on one core: today's pipeline against CloudMaker, and coverage.

For 640x480 Meta-World depth frames (three tasks, a few states each, mp1's camera and crop box):

* time, p50/p90 over ``--repeats`` calls, single-threaded and pinned to one core: today's
  ``depth_to_points`` + ``crop`` + ``farthest_point_sample`` (and each part), and ``CloudMaker``
  on the float32 metres frame, on the same frame as uint16 millimetres, and with a per-call pose;
* coverage: the Chamfer distance of each cloud to an exact farthest point sample
  (``fpsample.fps_sampling``) of the same in-crop points, as a ratio to that of today's cloud
  (the target: at most 1.2). The same ratio for exact FPS from another start point shows how
  much of it is chance (which points a sample of this size happens to land on);
* import throughput: frames per second of ``CloudMaker`` over the uint16 frames in a loop;
* other ``voxel_size`` / ``max_candidates`` settings, for the trade-off.

Times are wall clock and the thread's CPU time: on a shared machine the latter leaves out the
time other processes held the core. Usage:

    python benchmarks/perception.py [--frames 4] [--repeats 15] [--out benchmarks/results/perception]
"""

from __future__ import annotations

import os

# One thread everywhere: BLAS, OpenMP and Rayon pools read these when first loaded.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import fpsample  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from mp1.envs.base import mujoco_camera  # noqa: E402
from mp1.envs.metaworld import MetaWorldEnv, default_crop  # noqa: E402
from mp1.runtime.perception import Camera, CloudMaker, CloudPipeline  # noqa: E402
from mp1.runtime.pointcloud import crop, depth_to_points, farthest_point_sample  # noqa: E402

TASKS = ("pick-place", "door-open", "shelf-place")
WIDTH, HEIGHT, CAMERA, NUM_POINTS = 640, 480, "corner2", 1024
#: Expert steps between rendered states, so that the arm and the objects move.
STEPS_BETWEEN_STATES = 15
#: CloudMaker settings compared on the uint16 frames; "defaults" is CloudPipeline's.
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "max_candidates=2000": {"max_candidates": 2000},
    "max_candidates=3000": {"max_candidates": 3000},
    "max_candidates=5000": {"max_candidates": 5000},
    "voxel_size=0.0075": {"voxel_size": 0.0075},
    "voxel_size=0.015, max_candidates=3500": {"voxel_size": 0.015, "max_candidates": 3500},
}
METHODS = ("today", "cloudmaker_float32", "cloudmaker_uint16", "cloudmaker_uint16_with_pose")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def render_frames(states: int) -> list[dict[str, Any]]:
    """Depth (float32 metres), the MuJoCo camera's pose and the task's crop box for each state."""
    frames = []
    for task in TASKS:
        env = MetaWorldEnv(task, seed=0)
        inner = env._env  # the MuJoCo env, with the camera MetaWorldEnv placed
        model = inner.model
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, WIDTH)
        model.vis.global_.offheight = max(model.vis.global_.offheight, HEIGHT)
        renderer = mujoco.Renderer(model, HEIGHT, WIDTH)
        renderer.enable_depth_rendering()
        low, high = default_crop(task)
        for state in range(states):
            env.reset(seed=state)
            for _ in range(STEPS_BETWEEN_STATES * state):
                env.step(env.expert_action())
            renderer.update_scene(inner.data, CAMERA)
            pos, rot, fovy = mujoco_camera(model, inner.data, CAMERA)
            frames.append({"name": f"{task}/{state}", "depth": renderer.render().copy(), "pos": pos, "rot": rot,
                           "fovy": fovy, "low": low, "high": high})
        renderer.close()
        env.close()
    return frames


def timed(call: Callable[[], Any], repeats: int, warmup: int = 2) -> tuple[dict[str, float], Any]:
    """p50 / p90 in ms of wall clock and of thread CPU time, and the last result."""
    wall, cpu = [], []
    for index in range(warmup + repeats):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        result = call()
        if index >= warmup:
            wall.append((time.perf_counter() - start_wall) * 1e3)
            cpu.append((time.thread_time() - start_cpu) * 1e3)
    stats = {f"{clock}_p{q}_ms": float(np.percentile(values, q))
             for clock, values in (("cpu", cpu), ("wall", wall)) for q in (50, 90)}
    return stats, result


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance in metres: the mean nearest-neighbour distance each way, summed."""
    distances = np.linalg.norm(a[:, None, :3].astype(np.float64) - b[None, :, :3], axis=-1)
    return float(distances.min(axis=1).mean() + distances.min(axis=0).mean())


def maker_for(frame: dict[str, Any], **settings: Any) -> CloudMaker:
    camera = Camera.from_mujoco(CAMERA, WIDTH, HEIGHT, frame["fovy"], frame["pos"], frame["rot"])
    return CloudMaker(CloudPipeline((camera,), frame["low"], frame["high"], num_points=NUM_POINTS, **settings))


def millimetres(frame: dict[str, Any]) -> np.ndarray:
    return np.clip(np.round(frame["depth"] * 1000.0), 0, 65535).astype(np.uint16)


def measure_frame(frame: dict[str, Any], repeats: int) -> dict[str, Any]:
    depth, pos, rot, fovy, low, high = (frame[k] for k in ("depth", "pos", "rot", "fovy", "low", "high"))
    uint16 = millimetres(frame)
    times: dict[str, dict[str, float]] = {}
    times["depth_to_points"], points = timed(lambda: depth_to_points(depth, pos, rot, fovy_deg=fovy), repeats)
    times["crop"], in_crop = timed(lambda: crop(points, low, high), repeats)
    times["farthest_point_sample"], today = timed(lambda: farthest_point_sample(in_crop, NUM_POINTS), repeats)
    times["today"], _ = timed(lambda: farthest_point_sample(
        crop(depth_to_points(depth, pos, rot, fovy_deg=fovy), low, high), NUM_POINTS), repeats)
    maker = maker_for(frame)
    extrinsics = np.asarray(maker.pipeline.cameras[0].extrinsics)
    times["cloudmaker_float32"], fast = timed(lambda: maker(depth), repeats)
    times["cloudmaker_uint16"], _ = timed(lambda: maker(uint16), repeats)
    times["cloudmaker_uint16_with_pose"], _ = timed(lambda: maker(uint16, poses=extrinsics), repeats)

    exact = in_crop[fpsample.fps_sampling(in_crop, NUM_POINTS, start_idx=0).astype(np.int64)]
    other_start = in_crop[fpsample.fps_sampling(in_crop, NUM_POINTS, start_idx=len(in_crop) // 2).astype(np.int64)]
    today_distance = chamfer(today, exact)
    settings = {}
    for name, setting in SETTINGS.items():
        variant = maker_for(frame, **setting)
        stats, cloud = timed(lambda variant=variant: variant(uint16), repeats)
        settings[name] = {**stats, "chamfer_ratio": chamfer(cloud, exact) / today_distance}
    return {
        "frame": frame["name"],
        "in_crop_points": len(in_crop),
        "times": times,
        "chamfer_m": {"today": today_distance, "cloudmaker_float32": chamfer(fast, exact),
                      "exact_other_start": chamfer(other_start, exact)},
        "chamfer_ratio": chamfer(fast, exact) / today_distance,
        "chamfer_ratio_exact_other_start": chamfer(other_start, exact) / today_distance,
        "settings": settings,
    }


def throughput(frames: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Frames per second of CloudMaker over uint16 frames, as a dataset importer would run it."""
    makers = [maker_for(frame) for frame in frames]
    uint16 = [millimetres(frame) for frame in frames]
    count, start_wall, start_cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - start_wall < seconds:
        makers[count % len(frames)](uint16[count % len(frames)])
        count += 1
    return {"frames": count, "frames_per_s_wall": count / (time.perf_counter() - start_wall),
            "frames_per_s_cpu": count / (time.thread_time() - start_cpu)}


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "worst": float(np.max(values))}


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """p50s summarised over frames (median and worst frame), Chamfer ratios (mean and worst)."""
    return {
        "p50_ms": {method: {clock: spread([r["times"][method][f"{clock}_p50_ms"] for r in results])
                            for clock in ("cpu", "wall")} for method in METHODS},
        "chamfer_ratio": spread([r["chamfer_ratio"] for r in results]),
        "chamfer_ratio_exact_other_start": spread([r["chamfer_ratio_exact_other_start"] for r in results]),
        "settings": {name: {"cpu_p50_ms": spread([r["settings"][name]["cpu_p50_ms"] for r in results]),
                            "chamfer_ratio": spread([r["settings"][name]["chamfer_ratio"] for r in results])}
                     for name in SETTINGS},
    }


def text_report(report: dict[str, Any]) -> str:
    def cell(stats: dict[str, float]) -> str:
        return f"{stats['cpu_p50_ms']:.2f} ({stats['wall_p50_ms']:.1f})"

    s = report["summary"]
    lines = [f"{report['date']}, {report['machine']}; pinned to one core, one thread; "
             f"load average at start {report['load_average']}",
             f"CloudMaker defaults {report['defaults']}, {NUM_POINTS} points. p50 ms: cpu (wall).", "",
             f"{'frame':<15}{'in crop':>8}{'depth_to_points':>16}{'crop':>14}{'fps':>14}{'today':>14}"
             f"{'fast f32':>13}{'fast u16':>13}{'u16+pose':>13}{'ratio':>7}"]
    for r in report["frames"]:
        t = r["times"]
        lines.append(f"{r['frame']:<15}{r['in_crop_points']:>8}{cell(t['depth_to_points']):>16}{cell(t['crop']):>14}"
                     f"{cell(t['farthest_point_sample']):>14}{cell(t['today']):>14}{cell(t['cloudmaker_float32']):>13}"
                     f"{cell(t['cloudmaker_uint16']):>13}{cell(t['cloudmaker_uint16_with_pose']):>13}"
                     f"{r['chamfer_ratio']:>7.3f}")
    lines += ["", "p50 over frames, cpu ms: median / worst frame (wall median)"]
    for method in METHODS:
        p50 = s["p50_ms"][method]
        lines.append(f"  {method:<28}{p50['cpu']['median']:8.2f} / {p50['cpu']['worst']:6.2f}"
                     f"   ({p50['wall']['median']:.2f})")
    ratio, noise, fps = s["chamfer_ratio"], s["chamfer_ratio_exact_other_start"], report["import_throughput"]
    lines += [f"Chamfer ratio to exact FPS (target <= 1.2): mean {ratio['mean']:.3f}, worst {ratio['worst']:.3f}",
              f"  exact FPS from another start, for scale: mean {noise['mean']:.3f}, worst {noise['worst']:.3f}",
              f"import throughput, uint16 frames: {fps['frames_per_s_wall']:.0f} frames/s "
              f"({fps['frames_per_s_cpu']:.0f} per cpu second)", "",
              f"{'setting (uint16 frames)':<40}{'cpu p50 median':>15}{'ratio mean':>12}{'worst':>8}"]
    for name, row in s["settings"].items():
        lines.append(f"{name:<40}{row['cpu_p50_ms']['median']:>15.2f}{row['chamfer_ratio']['mean']:>12.3f}"
                     f"{row['chamfer_ratio']['worst']:>8.3f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4, help="states rendered per task")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per measurement")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the throughput loop")
    parser.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)), help="CPU core to pin to")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/perception"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    load = [round(x, 2) for x in os.getloadavg()]
    frames = render_frames(args.frames)
    results = []
    for frame in frames:
        results.append(measure_frame(frame, args.repeats))
        print(f"{frame['name']}: Chamfer ratio {results[-1]['chamfer_ratio']:.3f}", flush=True)
    pipeline = maker_for(frames[0]).pipeline
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, numpy {np.__version__}, fpsample {fpsample.__version__}",
        "load_average": load,
        "core": args.core,
        "defaults": {"voxel_size": pipeline.voxel_size, "max_candidates": pipeline.max_candidates},
        "summary": summary(results),
        "import_throughput": throughput(frames, args.seconds),
        "frames": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "perception.json").write_text(json.dumps(report, indent=1) + "\n")
    text = text_report(report)
    (args.out / "perception.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
