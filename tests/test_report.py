import json

import pytest

from mp1.report import collect_runs, write_sweep_report


def fake_run(root, task, policy, seed, strict, dp3, model=None, demos=10, folder=None, clock=False):
    run = root / task.replace("/", "_") / (folder or f"{policy}{'-custom' if model else ''}-seed{seed}")
    run.mkdir(parents=True)
    final = {
        "task": task, "policy": policy, "preset": "cpu", "seed": seed, "demos": demos, "epochs": 1, "steps": 8,
        "model": model or {}, "dp3_protocol_success": dp3,
        "periodic_evaluations": [{"step": 4, "success_rate": dp3 / 2}, {"step": 8, "success_rate": dp3}],
        "strict_protocol_success": strict,
        "strict_protocol": {"episodes": 50, "latency_p50_ms": 7.0 if policy == "mp1" else 60.0, "device": "cpu"},
    }
    if clock:  # runs since the training wall-clock was recorded
        for evaluation in final["periodic_evaluations"]:
            evaluation["train_seconds"] = 30.0 * evaluation["step"]
    (run / "final.json").write_text(json.dumps(final))


def test_sweep_report(tmp_path):
    for seed, (a, b) in enumerate([(0.8, 0.6), (0.6, 0.4)]):
        fake_run(tmp_path, "metaworld/button-press", "mp1", seed, a, a + 0.1)
        fake_run(tmp_path, "metaworld/button-press", "dp3", seed, b, b + 0.1)
        fake_run(tmp_path, "metaworld/push", "mp1", seed, 0.5, 0.5)
    assert len(collect_runs(tmp_path)) == 6
    text = write_sweep_report(tmp_path).read_text()
    assert "| metaworld/button-press | easy | 70.0 ± 10.0 (n=2) | 80.0 ± 10.0 (n=2) | 50.0 ± 10.0 (n=2) |" in text
    assert "| metaworld/push | hard | 50.0 ± 0.0 (n=2) | 50.0 ± 0.0 (n=2) | – | – |" in text
    # Group rows average the per-task means: n counts tasks (dp3 ran one).
    assert "| **all** (mean over tasks) |  | 60.0 ± 10.0 (n=2) | 65.0 ± 15.0 (n=2) | 50.0 (n=1) | 60.0 (n=1) |" in text
    assert "78.9%" in text and "132.2 ms" in text  # published numbers beside ours
    assert (tmp_path / "summary.png").stat().st_size > 5000 and (tmp_path / "runs.csv").exists()
    fake_run(tmp_path, "metaworld/push", "mp1", 0, 0.9, 0.9, model={"dispersive": {"weight": 0.0}})
    text = write_sweep_report(tmp_path).read_text()  # an ablation is its own column, not mixed into mp1
    assert "mp1[dispersive.weight=0.0] strict" in text
    assert "| metaworld/push | hard | 50.0 ± 0.0 (n=2) | 50.0 ± 0.0 (n=2) | 90.0 (n=1)" in text
    assert (tmp_path / "learning_curves.png").stat().st_size > 5000 and not (tmp_path / "few_shot.png").exists()
    with pytest.raises(ValueError, match="no finished runs"):
        write_sweep_report(tmp_path / "empty")


def test_sweep_report_few_shot_and_swept_settings(tmp_path):
    """Runs with other demo counts become few-shot columns; a swept training setting (a
    `key=value` folder level written by mp1 sweep) is a variant of its own, seeds are not."""
    for seed in (0, 1):
        for demos, strict in ((2, 0.2), (10, 0.6)):
            fake_run(tmp_path, "metaworld/push", "mp1", seed, strict + seed / 10, 0.5, demos=demos,
                     folder=f"policy=mp1/demos={demos}/seed={seed}")
        fake_run(tmp_path, "metaworld/push", "mp1", seed, 0.9, 0.9, demos=10, folder=f"policy=mp1/demos=10/lr=0.001/seed={seed}")
    text = write_sweep_report(tmp_path).read_text()
    assert "| mp1 (2 demos) strict | mp1 (2 demos) DP3 | mp1 (10 demos) strict |" in text
    assert "mp1[lr=0.001] (10 demos) strict" in text
    assert "| mp1 | 25.0 (n=1) | 65.0 (n=1) |" in text  # few-shot table: mean over seeds, then tasks
    assert (tmp_path / "few_shot.png").stat().st_size > 5000
    for demos in (5, 20):  # five methods: the per-task table turns to a row per method
        fake_run(tmp_path, "metaworld/push", "mp1", 0, demos / 40, 0.5, demos=demos, folder=f"policy=mp1/demos={demos}/seed=0")
    text = write_sweep_report(tmp_path).read_text()
    assert "| method | metaworld/push strict | metaworld/push DP3 | **hard** (mean over tasks) strict |" in text
    assert "| mp1 (5 demos) | 12.5 (n=1) | 50.0 (n=1) | 12.5 (n=1) | 50.0 (n=1) |" in text
    assert "| mp1 | 25.0 (n=1) | 12.5 (n=1) | 65.0 (n=1) | 50.0 (n=1) |" in text


def test_sweep_report_plots_success_against_training_time(tmp_path):
    """Runs that recorded their training wall-clock get a success-vs-time plot; older ones are left out of it."""
    fake_run(tmp_path, "metaworld/push", "mp1", 0, 0.5, 0.5)
    text = write_sweep_report(tmp_path).read_text()
    assert "success_vs_time" not in text and not (tmp_path / "success_vs_time.png").exists()
    fake_run(tmp_path, "metaworld/push", "dp3", 0, 0.9, 0.9, clock=True)
    text = write_sweep_report(tmp_path).read_text()
    assert "![success_vs_time](success_vs_time.png)" in text
    assert (tmp_path / "success_vs_time.png").stat().st_size > 5000


def test_published_numbers_come_from_one_documented_file():
    import re
    from pathlib import Path

    from mp1.report import PUBLISHED

    doc = (Path(__file__).resolve().parents[1] / "docs" / "published.md").read_text()
    names = {"mp1": "MP1", "flowpolicy": "FlowPolicy", "dp3": "DP3"}
    for method, numbers in PUBLISHED.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| {names[method]} |"))
        assert re.findall(r"[\d.]+", "".join(row.split("|")[2:4])) == [f"{100 * numbers['success']:.1f}", f"{numbers['latency_ms']:g}"], row


def test_report_of_runs_without_evaluations(tmp_path):
    """final_eval_episodes=0 and eval_every=0: no success, no latency; the report still comes,
    and final.json is strict JSON (null, never NaN)."""
    run = tmp_path / "metaworld_push" / "seed=0"
    run.mkdir(parents=True)
    from mp1 import jsonio

    final = {"task": "metaworld/push", "policy": "mp1", "preset": "cpu", "seed": 0, "demos": 10, "epochs": 1,
             "steps": 8, "model": {}, "dp3_protocol_success": float("nan"), "periodic_evaluations": []}
    (run / "final.json").write_text(jsonio.dumps(final))
    assert "NaN" not in (run / "final.json").read_text()
    text = write_sweep_report(tmp_path).read_text()
    assert "| metaworld/push | hard | – | – |" in text
    assert (tmp_path / "summary.png").exists()
