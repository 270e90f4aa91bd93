"""Training end to end on tiny data: each policy, kill-and-resume, and bad overrides."""

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mp1.cli import main
from mp1.data.demos import DemoConfig, generate_demos
from mp1.policies import Policy
from mp1.policies.policy import read_policy_file
from mp1.train import CheckpointError, Trainer, parse_overrides

TINY = [
    "model.unet.down_dims=[16,32,64]", "model.unet.time_embed_dim=16", "model.encoder.point_hidden_dims=[16,32]",
    "batch_size=16", "threads=1", "demos=2", "video=false", "checkpoint_every=1",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    generate_demos(["metaworld/button-press"], root, DemoConfig(episodes=2, steps_after_success=2))
    return root


@pytest.mark.parametrize("policy", ["mp1", "mp1-tuned", "flowpolicy", "dp3"])
def test_tiny_end_to_end_run(tmp_path, data_dir, policy):
    eval_jobs = 2 if policy == "mp1-tuned" else 1  # rollouts in processes, from a temporary policy file
    config = parse_overrides(
        TINY + [f"policy={policy}", f"data_dir={data_dir}", f"run_dir={tmp_path / 'run'}", "epochs=2",
                "eval_every=1", "eval_episodes=1", "final_eval_episodes=1", "eval_max_steps=12", f"eval_jobs={eval_jobs}"]
    )
    summary = Trainer(config).train()
    run = tmp_path / "run"
    assert not (run / "eval" / "policy_under_eval.pt").exists()
    assert config.lr == (3e-4 if policy == "mp1-tuned" else 1e-4)  # the policy's recipe, recorded
    assert "DP3: mean of all 2 periodic evaluations" in (run / "report.md").read_text()
    assert all(e["train_seconds"] > 0 for e in summary["periodic_evaluations"])
    recipe = summary["recipe"]  # every policy setting resolved, beside the optimiser's
    assert recipe["optimiser"]["lr"] == config.lr and recipe["model"]["objective"]["sample_steps"] >= 1
    assert recipe["model"]["unet"]["down_dims"] == [16, 32, 64] and recipe["model"]["noise_scale"] == 1.0
    for name in ("config.yaml", "recipe.yaml", "metrics.jsonl", "final.json", "report.md", "learning_curve.png",
                 "policy_latest.pt", "policy_best.pt", "checkpoints/latest.pt", "eval/final_episodes.json"):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir())
    assert len(summary["periodic_evaluations"]) == 2
    assert summary["strict_protocol"]["episodes"] == 1 and 0 <= summary["strict_protocol_success"] <= 1
    assert "strict: final EMA checkpoint" in (run / "report.md").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    per_epoch = summary["steps"] // 2  # a record every log_every (10) steps and at the end of each epoch
    expected = sorted({*range(10, summary["steps"] + 1, 10), per_epoch, 2 * per_epoch})
    assert steps == expected and all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    loaded = Policy.load(run / "policy_latest.pt")
    assert loaded.name == policy and loaded.config.state_dim == 9 and loaded.config.action_dim == 4
    extra = read_policy_file(run / "policy_latest.pt")["extra"]
    assert extra["task"] == "metaworld/button-press"
    assert extra["observation"]["num_points"] == 512 and extra["observation"]["use_rgb"] is False

    if policy == "mp1":  # the eval command, with parallel rollouts
        result = subprocess.run(
            [sys.executable, "-m", "mp1", "eval", str(run), "--episodes", "3", "--max-steps", "8", "--jobs", "2"],
            capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "strict protocol" in result.stdout and "over 3 episodes" in result.stdout
        saved = json.loads((run / "eval" / "eval_seed1000_3ep.json").read_text())
        assert [e["env_seed"] for e in saved["per_episode"]] == [1000, 1001, 1002]
    if policy == "mp1-tuned":  # the inference knobs at evaluation, recorded in the result's name and contents
        main(["eval", str(run), "--episodes", "2", "--max-steps", "6", "--noise-scale", "0", "--steps", "2"])
        saved = json.loads((run / "eval" / "eval_seed1000_2ep_noise_scale0.0_steps2.json").read_text())
        assert saved["sampling"] == {"noise_scale": 0.0, "steps": 2} and saved["episodes"] == 2


def test_grad_clip_is_applied(tmp_path, data_dir):
    config = parse_overrides(TINY + [f"data_dir={data_dir}", f"run_dir={tmp_path}", "epochs=1", "eval_every=0",
                                     "final_eval_episodes=0", "grad_clip=0.5"])
    Trainer(config).train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("grad_norm" in r for r in records if r["kind"] == "train")


def train_command(data_dir, run_dir, epochs):
    args = TINY + [f"data_dir={data_dir}", f"run_dir={run_dir}", f"epochs={epochs}", "eval_every=0",
                   "final_eval_episodes=0", "seed=5", "log_every=1"]
    return [sys.executable, "-m", "mp1", "train", *args]


def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path, data_dir):
    epochs = 4
    reference = subprocess.run(train_command(data_dir, tmp_path / "ref", epochs), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]

    run = tmp_path / "killed"
    process = subprocess.Popen(train_command(data_dir, run, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run / "checkpoints" / "latest.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "final.json").exists(), "the run finished before it could be killed"
    interrupted_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= interrupted_at < epochs

    resumed = subprocess.run(train_command(data_dir, run, epochs), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run} from epoch {interrupted_at}" in resumed.stdout

    ref_state = torch.load(tmp_path / "ref" / "checkpoints" / "latest.pt", weights_only=True)
    new_state = torch.load(checkpoint, weights_only=True)
    assert new_state["step"] == ref_state["step"]
    for key, value in ref_state["policy"].items():
        torch.testing.assert_close(new_state["policy"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, ref_state["step"] + 1))  # log_every=1: nothing lost, nothing doubled


def test_resume_refuses_a_different_config(tmp_path, data_dir):
    base = TINY + [f"data_dir={data_dir}", f"run_dir={tmp_path}", "epochs=1", "eval_every=0", "final_eval_episodes=0"]
    Trainer(parse_overrides(base)).train()
    Trainer(parse_overrides(base + ["epochs=2"])).train()  # more epochs: a legitimate resume
    checkpoint = tmp_path / "checkpoints" / "latest.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["precision"]  # a run saved before the key existed used its default
    del state["checksum"]  # ... and before checkpoints had checksums and their RNG states as tensors
    state["rng"]["numpy"], state["rng"]["python"] = np.random.get_state(), random.getstate()
    torch.save(state, checkpoint)
    assert Trainer(parse_overrides(base + ["epochs=3"])).train()["steps"] > state["step"]
    with pytest.raises(ValueError, match="another config.*lr: 0.0001 -> 0.001"):
        Trainer(parse_overrides(base + ["lr=1e-3"])).train()


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy=dp4", "unknown policy 'dp4'"),
        ("task=metaworld/button-pres", "unknown Meta-World task 'button-pres'"),
        ("epochs=-3", "epochs must be at least 0"),
        ("data_path=/nonexistent/demos.zarr", "data_path /nonexistent/demos.zarr does not exist"),
        ("epochs=many", "epochs"),
        ("colour=blue", "colour"),
        ("model.unet.down_dims=7", "down_dims"),
    ],
)
def test_bad_overrides_give_one_line_errors(tmp_path, override, message):
    """In process: `main` turns the error into SystemExit's message, which Python prints alone."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", override, f"run_dir={tmp_path}"])
    assert str(exit_.value.code).startswith("mp1: error: ") and message in exit_.value.code


def test_a_bad_override_from_the_shell_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mp1", "train", "policy=dp4", f"run_dir={tmp_path}"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.startswith("mp1: error: unknown policy 'dp4'") and "Traceback" not in result.stderr, result.stderr


def test_adroit_trains_and_evaluates_with_no_other_change(tmp_path, monkeypatch):
    monkeypatch.setenv("MP1_HOME", str(tmp_path / "home"))  # nothing imported: the packaged experts
    config = parse_overrides(
        TINY + ["task=adroit/hammer", "demos=1", f"data_dir={tmp_path / 'demos'}", f"run_dir={tmp_path / 'run'}",
                "epochs=1", "eval_every=0", "final_eval_episodes=1", "eval_max_steps=5"]
    )
    summary = Trainer(config).train()
    assert summary["strict_protocol"]["episodes"] == 1
    policy = Policy.load(tmp_path / "run" / "policy_latest.pt")
    assert policy.config.state_dim == 24 and policy.config.action_dim == 26


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["hostile", "truncated", "altered", "text", "foreign"])
def test_bad_checkpoint_is_refused_without_running_code(tmp_path, data_dir, kind):
    base = TINY + [f"data_dir={data_dir}", f"run_dir={tmp_path / 'run'}", "epochs=1", "eval_every=0", "final_eval_episodes=0"]
    checkpoint = tmp_path / "run" / "checkpoints" / "latest.pt"
    marker = tmp_path / "code-ran"
    if kind in ("truncated", "altered"):
        Trainer(parse_overrides(base)).train()
        if kind == "truncated":
            checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
        else:  # an optimiser moment changed after saving: loadable, but not what was written
            state = torch.load(checkpoint, weights_only=True)
            next(iter(state["optimizer"]["state"].values()))["exp_avg"].view(-1)[0] += 1.0
            torch.save(state, checkpoint)
    else:
        checkpoint.parent.mkdir(parents=True)
        if kind == "hostile":
            torch.save({"config": _RunsCode(marker)}, checkpoint)
        elif kind == "text":
            checkpoint.write_text("not a checkpoint")
        else:
            torch.save({"weights": torch.zeros(2)}, checkpoint)
    with pytest.raises(CheckpointError, match="checkpoint"):
        Trainer(parse_overrides(base + ["epochs=2"])).train()
    assert not marker.exists()


def test_a_step_budget_sets_the_fewest_epochs_reaching_it(tmp_path, data_dir):
    config = parse_overrides(TINY + [f"data_dir={data_dir}", f"run_dir={tmp_path}", "steps=12", "epochs=50",
                                     "eval_every=0", "final_eval_episodes=0"])
    trainer = Trainer(config)
    per_epoch = len(trainer.loader)
    assert per_epoch < 12 and config.epochs == -(-12 // per_epoch)
    summary = trainer.train()
    assert 12 <= summary["steps"] < 12 + per_epoch and summary["epochs"] == config.epochs
    assert f"epochs: {config.epochs}" in (tmp_path / "config.yaml").read_text()


@pytest.mark.slow
def test_compiled_training_keeps_plain_checkpoints(tmp_path, data_dir):
    config = parse_overrides(TINY + [f"data_dir={data_dir}", f"run_dir={tmp_path}", "epochs=1", "eval_every=0",
                                     "final_eval_episodes=0", "compile=true"])
    summary = Trainer(config).train()
    state = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)["policy"]
    assert summary["steps"] > 0 and not any("_orig_mod" in key for key in state)
    Policy.load(tmp_path / "policy_latest.pt")  # loads into an uncompiled policy


def test_a_non_finite_loss_stops_the_run_before_a_checkpoint(tmp_path, data_dir):
    config = parse_overrides(TINY + [f"data_dir={data_dir}", f"run_dir={tmp_path}", "epochs=1", "eval_every=0",
                                     "final_eval_episodes=0", "log_every=3"])
    trainer = Trainer(config)
    compute_loss = trainer.policy.compute_loss

    def diverging(batch, step, checked=True):
        loss, info = compute_loss(batch, step, checked)
        if step == 4:  # inside the second record's window (steps 4-6)
            loss = loss * float("nan")
            info["loss"] = loss.detach()
        return loss, info

    trainer.policy.compute_loss = diverging
    with pytest.raises(FloatingPointError, match="within steps 4-6"):
        trainer.train()
    assert not (tmp_path / "checkpoints" / "latest.pt").exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3]
