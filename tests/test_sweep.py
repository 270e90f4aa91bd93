"""Sweeps: planning (sets, folders, few-shot stores, bad input) and tiny runs through both launchers."""

import json

import pytest

from mp1.cli import main
from mp1.data.demos import DemoConfig, generate_demos
from mp1.sweep import plan, run_one, split_values, sweep
from mp1.train import parse_overrides

TINY = [
    "model.unet.down_dims=[16,32,64]", "model.unet.time_embed_dim=16", "model.encoder.point_hidden_dims=[16,32]",
    "batch_size=16", "epochs=1", "eval_every=1", "eval_episodes=1", "final_eval_episodes=1", "eval_max_steps=6",
    "video=false",
]


def test_split_values_keeps_lists_whole():
    assert split_values("mp1,dp3") == ["mp1", "dp3"]
    assert split_values("[16,32],[8,8]") == ["[16,32]", "[8,8]"]
    assert split_values("0.5") == ["0.5"]


def test_plan_expands_sets_and_names_folders(tmp_path):
    runs = plan(["policy=mp1,dp3", "task=cpu-suite", "seed=0,1", "demos=5,10", "model.dispersive.weight=0.5"], tmp_path)
    assert len(runs) == 2 * 5 * 2 * 2
    tasks = {run.config.task for run in runs}
    assert "adroit/hammer" in tasks and len(tasks) == 5
    first = runs[0]
    assert first.folder == tmp_path / "metaworld_button-press" / "policy=mp1" / "seed=0" / "demos=5"
    assert first.config.model == {"dispersive": {"weight": 0.5}}
    # The few-shot run trains on the first 5 episodes of the 10-episode store, shared with the 10-demo runs.
    assert first.config.data_path.endswith("metaworld_button-press_seed0_10ep.zarr") and first.store_episodes == 10
    assert {run.folder for run in plan(["policy=mp1,dp3", "task=cpu-suite", "seed=0,1", "demos=5,10"], tmp_path)} == {
        run.folder for run in runs
    }  # same command, same folders: what makes skipping and resuming work


@pytest.mark.parametrize(
    "args, message",
    [
        (["policy=mp1,mp2"], "unknown policy 'mp2'"),
        (["task=easy,nope"], "unknown environment or set 'nope'"),
        (["epochs=-1"], "epochs must be at least 0"),
        (["lrr=1"], "lrr"),
        (["run_dir=x"], "set per run by the sweep"),
        (["seed"], "expected key=value"),
    ],
)
def test_bad_sweeps_fail_before_running(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *args, "--dir", str(tmp_path / "sweep")])
    assert message in str(exit_info.value)
    assert not (tmp_path / "sweep").exists()


def test_a_failing_run_is_reported_not_raised(tmp_path):
    config = parse_overrides([f"data_path={tmp_path / 'missing.zarr'}", "data_dir=x"], None)
    assert "FileNotFoundError" in run_one(config)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    generate_demos(["metaworld/button-press"], root, DemoConfig(episodes=2))  # what the sweep itself would make
    return root


@pytest.mark.slow
@pytest.mark.parametrize("launcher, policies", [("local", ["mp1", "flowpolicy"]), ("submitit-local", ["mp1"])])
def test_tiny_sweep_runs_skips_and_reports(tmp_path, data_dir, launcher, policies):
    args = TINY + [f"policy={','.join(policies)}", f"data_dir={data_dir}", "demos=1,2", "threads=1"]
    report = sweep(args, tmp_path, launcher=launcher, jobs=2)
    finals = sorted(tmp_path.rglob("final.json"))
    assert len(finals) == 2 * len(policies)
    assert {json.loads(f.read_text())["demos"] for f in finals} == {1, 2}
    text = report.read_text()
    success = text[text.index("## Success per task"):text.index("## Methods")]
    for demos in (1, 2):  # each method at each demo count: a column (a row each, once methods outnumber rows)
        assert success.count(f" ({demos} demos) strict") + success.count(f" ({demos} demos) |") == len(policies)
    assert (tmp_path / "few_shot.png").exists() and (tmp_path / "learning_curves.png").exists()
    stamps = [f.stat().st_mtime_ns for f in finals]
    report_stamp = report.stat().st_mtime_ns
    sweep(args, tmp_path, launcher=launcher, jobs=2)  # everything finished: nothing is retrained or reported
    assert [f.stat().st_mtime_ns for f in finals] == stamps
    assert report.stat().st_mtime_ns == report_stamp
    report.unlink()  # ... unless the report is missing; the development set reaches it
    sweep(args, tmp_path, launcher=launcher, jobs=2, dev_set=["metaworld/button-press"])
    assert "Development set (marked *dev*): metaworld/button-press" in report.read_text()
