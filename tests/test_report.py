import json

import pytest

from mp1.report import collect_runs, write_sweep_report


def fake_run(root, task, policy, seed, strict, dp3, model=None):
    run = root / task.replace("/", "_") / f"{policy}{'-custom' if model else ''}-seed{seed}"
    run.mkdir(parents=True)
    final = {
        "task": task, "policy": policy, "preset": "cpu", "seed": seed, "demos": 10, "epochs": 1, "steps": 8,
        "model": model or {},
        "dp3_protocol_success": dp3, "periodic_evaluations": [], "strict_protocol_success": strict,
        "strict_protocol": {"episodes": 50, "latency_p50_ms": 7.0 if policy == "mp1" else 60.0, "device": "cpu"},
    }
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
    assert "| **all** (mean over tasks) | | 60.0 ± 10.0 (n=2) | 65.0 ± 15.0 (n=2) | 50.0 ± 0.0 (n=1) | 60.0 ± 0.0 (n=1) |" in text
    assert "78.9%" in text and "132.2 ms" in text  # published numbers beside ours
    assert (tmp_path / "summary.png").stat().st_size > 5000 and (tmp_path / "runs.csv").exists()
    fake_run(tmp_path, "metaworld/push", "mp1", 0, 0.9, 0.9, model={"dispersive": {"weight": 0.0}})
    text = write_sweep_report(tmp_path).read_text()  # an ablation is its own column, not mixed into mp1
    assert "mp1[dispersive.weight=0.0] strict" in text
    assert "| metaworld/push | hard | 50.0 ± 0.0 (n=2) | 50.0 ± 0.0 (n=2) | 90.0 ± 0.0 (n=1)" in text
    with pytest.raises(ValueError, match="no finished runs"):
        write_sweep_report(tmp_path / "empty")
