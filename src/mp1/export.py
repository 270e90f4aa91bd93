"""ONNX export of the one-step policies: normalisation, point-cloud encoder, network and
unnormalisation in one graph, with the sampling noise as an input (so the caller controls
randomness and the graph is deterministic). DP3's 10-step DDIM loop stays torch-only.

    mp1 export runs/.../policy_latest.pt --onnx policy.onnx

The graph's inputs are `point_cloud` (1, n_obs_steps, N, C), `agent_pos` (1, n_obs_steps, Ds)
and `noise` (1, horizon, Da), float32; its output `action_pred` (1, horizon, Da), of which a
runner executes steps `n_obs_steps - 1` to `n_obs_steps - 1 + n_action_steps`. Running it needs
onnxruntime and numpy only. The model's metadata (`custom_metadata_map` in onnxruntime) says all
of that, as strings: the policy, its shapes, the steps to execute, the inference knobs baked in,
and the observation the policy was trained on (JSON), so a robot needs nothing but the file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import mp1
from mp1.objectives import Diffusion
from mp1.policies import Policy
from mp1.runtime.contract import ObservationContract

INPUTS = ("point_cloud", "agent_pos", "noise")


class SampleGraph(nn.Module):
    """`Policy.sample_actions` as a module: observations and noise -> action chunk."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, point_cloud: torch.Tensor, agent_pos: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy.sample_actions(point_cloud, agent_pos, noise)


def example_inputs(policy: Policy, num_points: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs in the normaliser's range (uniform between the per-dimension minimum and maximum it was fitted on)."""
    c, rng = policy.config, np.random.default_rng(seed)

    def within(key: str, shape: tuple[int, ...]) -> np.ndarray:
        low, high = (policy.normalizer.unnormalize(key, torch.full((shape[-1],), v)).numpy() for v in (-1.0, 1.0))
        return (low + (high - low) * rng.random(shape)).astype(np.float32)

    return {
        "point_cloud": within("point_cloud", (1, c.n_obs_steps, num_points, c.point_dim)),
        "agent_pos": within("agent_pos", (1, c.n_obs_steps, c.state_dim)),
        "noise": rng.standard_normal((1, c.horizon, c.action_dim)).astype(np.float32),
    }


def onnx_metadata(policy: Policy, num_points: int, origin: dict[str, Any] | None = None) -> dict[str, str]:
    """What a runner of the graph needs to know, as the string pairs ONNX metadata holds;
    `origin` is the policy file's record of its training data (task, observation, pipeline)."""
    c, origin = policy.config, origin or {}
    start = c.n_obs_steps - 1
    values = {
        "mp1_version": mp1.__version__, "policy": policy.name, "inputs": ",".join(INPUTS), "output": "action_pred",
        "n_obs_steps": c.n_obs_steps, "horizon": c.horizon, "n_action_steps": c.n_action_steps,
        "execute_steps": f"{start}:{start + c.n_action_steps}", "num_points": num_points, "point_dim": c.point_dim,
        "state_dim": c.state_dim, "action_dim": c.action_dim, "noise_scale": c.noise_scale,
        "sample_steps": c.objective.sample_steps, "task": origin.get("task") or "",
        "observation": json.dumps(origin.get("observation") or {}), "pipeline": json.dumps(origin.get("pipeline")),
        "contract": json.dumps(ObservationContract.of(c, origin).to_dict()),
    }
    return {key: str(value) for key, value in values.items()}


def export_onnx(policy: Policy, out: str | Path, num_points: int = 512, origin: dict[str, Any] | None = None) -> Path:
    """Writes the graph (fixed shapes: batch 1, `num_points` points) to `out`, with `onnx_metadata`."""
    import onnx

    if isinstance(policy.objective, Diffusion):
        raise ValueError(f"{policy.name} samples with a {policy.objective.sample_steps}-step DDIM loop; "
                         "ONNX export is for the one-step policies (mp1, mp1-tuned, flowpolicy, flowmatching)")
    policy = policy.cpu().accelerate("eager")  # float32, no compiled or captured sampler in the graph
    inputs = tuple(torch.from_numpy(v) for v in example_inputs(policy, num_points).values())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        torch.onnx.export(SampleGraph(policy), inputs, str(out), input_names=list(INPUTS),
                          output_names=["action_pred"], dynamo=True, verbose=False)
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, onnx_metadata(policy, num_points, origin))
    onnx.save(model, str(out))
    return out


def onnx_session(path: str | Path, threads: int = 0):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only (it notes that it cannot constant-fold Mish)
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(policy: Policy, session, num_points: int = 512, trials: int = 3) -> float:
    """Largest |onnxruntime - torch| (float32 eager) over the action chunks of `trials` random inputs."""
    policy = policy.cpu().accelerate("eager")
    worst = 0.0
    for seed in range(trials):
        feed = example_inputs(policy, num_points, seed)
        with torch.inference_mode():
            expected = policy.sample_actions(*(torch.from_numpy(feed[k]) for k in INPUTS)).numpy()
        worst = max(worst, float(np.abs(session.run(None, feed)[0] - expected).max()))
    return worst


class OnnxPolicy:
    """A one-step policy's exported graph behind the `predict_action` of a `Policy` (batch 1, the
    same noise drawn from the same generator), so that a `PolicyRunner` or `mp1 serve --backend
    onnx` runs onnxruntime instead of torch: about 2-3x faster on a CPU for the cpu preset. The
    observations are checked by the torch policy's validator, so the errors are the same."""

    def __init__(self, policy: Policy, num_points: int, threads: int = 0):
        import tempfile

        self.policy = policy.cpu().eval()
        self.config, self.name, self.device = policy.config, policy.name, torch.device("cpu")
        with tempfile.TemporaryDirectory() as folder:  # onnxruntime holds the graph once loaded
            self.session = onnx_session(export_onnx(self.policy, f"{folder}/policy.onnx", num_points), threads)
        self.num_points = num_points

    def predict_action(
        self, obs: dict[str, Any], steps: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        if steps not in (None, self.config.objective.sample_steps):
            raise ValueError(f"the exported graph samples with {self.config.objective.sample_steps} step(s), not {steps}")
        checked = self.policy.validate_obs(obs)
        if checked["point_cloud"].shape[:3] != (1, self.config.n_obs_steps, self.num_points):
            raise ValueError(f"the exported graph takes one observation of {self.num_points} points, "
                             f"got point_cloud of shape {tuple(checked['point_cloud'].shape)}")
        noise = torch.randn((1, self.config.horizon, self.config.action_dim), generator=generator)
        feed = {"point_cloud": checked["point_cloud"].numpy(), "agent_pos": checked["agent_pos"].numpy(), "noise": noise.numpy()}
        action_pred = torch.from_numpy(self.session.run(None, feed)[0])
        start = self.config.n_obs_steps - 1
        return {"action": action_pred[:, start : start + self.config.n_action_steps], "action_pred": action_pred}
