"""A robot's own data: training with no simulator behind the store, validated on held-out episodes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mp1.cli import main
from mp1.data import write_store
from mp1.policies import Policy
from mp1.train import Trainer, parse_overrides

TINY = [
    "model.unet.down_dims=[16,32,64]", "model.unet.time_embed_dim=16", "model.encoder.point_hidden_dims=[16,32]",
    "batch_size=16", "threads=1", "video=false",
]
STATE, ACTION, POINTS, EPISODES, LENGTH = 14, 14, 64, 5, 12


@pytest.fixture(scope="module")
def dual_arm_store(tmp_path_factory):
    """A 14-D dual-arm store with XYZRGB clouds, as a user writes it: no simulated task recorded."""
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(EPISODES):
        state = np.cumsum(rng.normal(0, 0.05, (LENGTH, STATE)), axis=0).astype(np.float32)
        episodes.append({
            "point_cloud": rng.random((LENGTH, POINTS, 6), dtype=np.float32),
            "state": state,
            "action": np.roll(state, -1, axis=0),  # the next state as the command
        })
    path = tmp_path_factory.mktemp("robot") / "dualarm.zarr"
    write_store(path, episodes, attrs={"robot": "dual-arm"})
    return path


def test_a_store_without_a_task_trains_without_a_simulator(tmp_path, dual_arm_store):
    run = tmp_path / "run"
    script = f"""
import json, sys
from mp1.train import Trainer, parse_overrides
config = parse_overrides({TINY!r} + ["policy=mp1-tuned", "data_path={dual_arm_store}", "run_dir={run}", "demos=0",
                                     "val_episodes=2", "epochs=2", "eval_every=1"])
summary = Trainer(config).train()
loaded = [m for m in ("mujoco", "metaworld", "gymnasium_robotics") if m in sys.modules]
print(json.dumps({{"loaded": loaded, "task": config.task}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "task": ""}  # no simulator was imported, no task assumed

    final = json.loads((run / "final.json").read_text())
    assert "strict_protocol" not in final and final["task"] == ""
    validation = final["validation"]
    assert validation["val_episodes"] == 2 and len(validation["val_mse_per_dim"]) == ACTION
    assert np.isfinite(validation["val_mse"]) and validation["val_mse"] > 0
    assert [("val_mse" in e, "success_rate" in e) for e in final["periodic_evaluations"]] == [(True, False)] * 2
    best = Policy.load(run / "policy_best.pt")
    assert best.config.state_dim == STATE and best.config.action_dim == ACTION and best.config.point_dim == 6
    assert (run / "learning_curve.png").exists() and "Validation, final EMA weights on 2 held-out" in (run / "report.md").read_text()

    main(["eval", str(run)])  # no simulator: eval validates on the held-out episodes, with the same numbers
    evaluated = json.loads((run / "eval" / "validation.json").read_text())
    assert evaluated["val_mse"] == pytest.approx(validation["val_mse"], rel=1e-6)
    main(["eval", str(run), "--noise-scale", "0"])
    assert json.loads((run / "eval" / "validation_noise_scale0.0.json").read_text())["sampling"]["noise_scale"] == 0.0
    with pytest.raises(SystemExit, match="has no simulated task and .* held out no episodes: pass --task ENV"):
        main(["eval", str(run / "policy_latest.pt")])


def test_validation_error_measures_the_distance_to_the_demonstrated_chunks(dual_arm_store):
    """The measure itself, on a stand-in policy that replays the demonstration (plus an offset):
    0 for the demonstration, the offset's square in normalised units per action dimension."""
    from mp1.data import PointCloudDataset
    from mp1.validation import validation_error

    trainer = Trainer(parse_overrides(TINY + [f"data_path={dual_arm_store}", "demos=0", "val_episodes=2", "run_dir=/unused"]))
    dataset = PointCloudDataset(dual_arm_store, split="val", val_episodes=2, seed=0)
    offset = torch.linspace(0.0, 0.2, ACTION)

    class Replay:  # validation_error walks the windows in order, a batch at a time
        config, normalizer, device = trainer.policy.config, trainer.policy.normalizer, torch.device("cpu")
        position, shift = 0, 0.0

        def predict_action(self, obs, generator=None):
            steps = dataset.window_steps[self.position : self.position + len(obs["agent_pos"])]
            self.position += len(steps)
            return {"action_pred": torch.from_numpy(dataset.action[steps]) + self.shift}

    assert validation_error(Replay(), dataset, batch_size=7)["val_mse"] == pytest.approx(0.0, abs=1e-12)
    shifted = Replay()
    shifted.shift = offset
    normalise = lambda action: trainer.policy.normalizer.normalize("action", action)
    expected = (normalise(offset) - normalise(torch.zeros(ACTION))).double().pow(2)
    measured = validation_error(shifted, dataset, batch_size=7)
    np.testing.assert_allclose(measured["val_mse_per_dim"], expected.numpy(), rtol=1e-4, atol=1e-12)
    assert measured["val_windows"] == len(dataset) and measured["val_episodes"] == 2


def test_a_validation_split_larger_than_the_store_is_a_clear_error(dual_arm_store):
    config = parse_overrides(TINY + [f"data_path={dual_arm_store}", "demos=0", f"val_episodes={EPISODES}"])
    with pytest.raises(ValueError, match=f"val_episodes={EPISODES} must be at least 0 and leave a training episode: "
                                         f"the store holds {EPISODES}"):
        Trainer(config)
