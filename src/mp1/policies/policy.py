"""The point-cloud policy: observation encoder -> conditioning vector -> objective's sampler
over the UNet. The objective (MeanFlow, consistency flow, diffusion, flow matching) is the
only thing that differs between MP1, FlowPolicy and DP3."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

import mp1
from mp1.integrity import content_digest
from mp1.nn import ConditionalUnet1D, ObservationEncoder
from mp1.objectives.base import NetOutput
from mp1.policies.config import POLICY_CONFIGS, PolicyConfig, config_from_dict, config_to_dict
from mp1.runtime.normalizer import LinearNormalizer

FILE_FORMAT = "mp1-policy"
# Version 2 adds `checksum` (content_digest of everything else in the file), verified on load; version 1 files,
# which have none, still load.
FILE_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class PolicyFileError(ValueError):
    """A file that is not a readable mp1 policy (foreign, truncated or corrupt)."""


class CudaGraphSampler:
    """Replays a tensor function from CUDA graphs, one captured per input shape: the inputs are
    copied into the graph's static buffers, so no Python or kernel-launch overhead remains."""

    def __init__(self, fn):
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((x.shape, x.dtype) for x in inputs)
        if key not in self.graphs:
            self.graphs[key] = self.capture(inputs)
        graph, static_inputs, static_output = self.graphs[key]
        for buffer, x in zip(static_inputs, inputs):
            buffer.copy_(x)
        graph.replay()
        return static_output.clone()

    def capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = [x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the capture (cuDNN autotuning, allocator)
            for _ in range(3):
                self.fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.fn(*static_inputs)
        return graph, static_inputs, static_output


class Policy(nn.Module):
    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        names = [name for name, cls in POLICY_CONFIGS.items() if type(config) is cls]
        if not names:
            raise ValueError(f"{type(config).__name__} is not a policy config; use make_config()")
        self.name = names[0]
        self.encoder = ObservationEncoder(config.encoder, config.point_dim, config.state_dim, config.n_obs_steps)
        self.unet = ConditionalUnet1D(config.action_dim, self.encoder.out_dim, config.unet)
        self.normalizer = LinearNormalizer(
            {"point_cloud": config.point_dim, "agent_pos": config.state_dim, "action": config.action_dim}
        )
        self._fast_sampler = None  # set by accelerate()
        self._acceleration = ("eager", "fp32")  # accelerate()'s arguments, re-applied by set_sampling()
        self._inference_copy: tuple[ObservationEncoder, ConditionalUnet1D] | None = None  # bf16 encoder and UNet

    @property
    def objective(self):
        return self.config.objective

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_normalizer(self, normalizer: LinearNormalizer) -> None:
        self.normalizer.load_state_dict(normalizer.state_dict())

    def encode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        point_cloud = self.normalizer.normalize("point_cloud", obs["point_cloud"])
        agent_pos = self.normalizer.normalize("agent_pos", obs["agent_pos"])
        return self.encoder(point_cloud, agent_pos)

    def net(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> NetOutput:
        """The objective's view of the UNet; it hands out features when a feature loss is on."""
        return self.unet(z, r, t, cond, return_features=self.training and self.config.dispersive.enabled)

    def compute_loss(
        self, batch: Mapping[str, Any], step: int = 0, checked: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective's loss on a batch and its detached parts. `checked=False` skips the input
        checks (each waits for the device) for float32 tensors already on it from a validated store."""
        if checked:
            obs = self.validate_obs(batch["obs"])
            action = self._as_tensor("action", batch["action"], (self.config.horizon, self.config.action_dim))
        else:
            obs, action = batch["obs"], batch["action"]
        cond = self.encode(obs)
        feature_loss = self.config.dispersive if self.config.dispersive.enabled else None
        return self.objective.loss(self.net, self.normalizer.normalize("action", action), cond, feature_loss, step)

    def predict_action(
        self, obs: Mapping[str, Any], steps: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """obs: {"point_cloud": (B, To, N, C), "agent_pos": (B, To, Ds)}, torch or numpy, any
        device. Returns {"action": (B, n_action_steps, Da), "action_pred": (B, horizon, Da)}."""
        with torch.inference_mode():
            obs = self.validate_obs(obs)
            shape = (obs["agent_pos"].shape[0], self.config.horizon, self.config.action_dim)
            # Drawn on the CPU (a few numbers) and copied: the same seed gives the same actions on
            # any device, and no CUDA generator meets a captured CUDA graph.
            if generator is not None and generator.device.type != "cpu":
                raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
            noise = torch.randn(shape, generator=generator).to(self.device)
            if steps is None and self._fast_sampler is not None:
                action_pred = self._fast_sampler(obs["point_cloud"], obs["agent_pos"], noise)
            else:
                action_pred = self.sample_actions(obs["point_cloud"], obs["agent_pos"], noise, steps)
            if not torch.isfinite(action_pred).all():
                raise ValueError(
                    "the policy produced non-finite actions: are the observations far outside the range of "
                    "the training data (wrong units or frame)?"
                )
            start = self.config.n_obs_steps - 1
            return {"action": action_pred[:, start : start + self.config.n_action_steps], "action_pred": action_pred}

    def sample_actions(
        self, point_cloud: torch.Tensor, agent_pos: torch.Tensor, noise: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        """The tensor computation of predict_action: observations and standard normal noise ->
        action chunk (the noise is scaled here, so exported graphs and captured ones scale it too)."""
        noise = noise * self.config.noise_scale
        if self._inference_copy is None:
            cond = self.encode({"point_cloud": point_cloud, "agent_pos": agent_pos})
            return self.normalizer.unnormalize("action", self.objective.sample(self.net, noise, cond, steps))
        # bf16: the networks run on their low-precision copies; (un)normalisation and times stay float32.
        encoder, unet = self._inference_copy
        low = torch.bfloat16
        point_cloud = self.normalizer.normalize("point_cloud", point_cloud).to(low)
        cond = encoder(point_cloud, self.normalizer.normalize("agent_pos", agent_pos).to(low))

        def net(z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return unet(z.to(low), r, t, cond)

        return self.normalizer.unnormalize("action", self.objective.sample(net, noise.to(low), cond, steps).float())

    def accelerate(self, mode: str = "cuda_graph", precision: str = "fp32") -> "Policy":
        """Faster predict_action for deployment, same results (for the default number of steps):
        "compile" (torch.compile), "cuda_graph" (captured once per input shape, then replayed;
        CUDA only), or "eager" to undo. `precision="bf16"` runs the network on a bfloat16 copy of
        its weights, made once here (the training weights stay float32; actions then differ from
        float32's by bf16 rounding). Call it after moving the policy to its device."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
        self._acceleration = (mode, precision)
        self._inference_copy = None
        if precision == "bf16":
            encoder = copy.deepcopy(self.encoder).to(torch.bfloat16).eval().requires_grad_(False)
            self._inference_copy = (encoder, self.unet.low_precision_copy(torch.bfloat16))
        if mode == "eager":
            self._fast_sampler = None
        elif mode == "compile":
            self._fast_sampler = torch.compile(self.sample_actions, dynamic=False)
        elif mode == "cuda_graph":
            if self.device.type != "cuda":
                raise ValueError(f"cuda_graph needs the policy on a CUDA device; it is on {self.device}")
            self._fast_sampler = CudaGraphSampler(self.sample_actions)
        else:
            raise ValueError(f"unknown mode {mode!r}; choose eager, compile or cuda_graph")
        self.eval()
        return self

    def set_sampling(self, noise_scale: float | None = None, steps: int | None = None) -> "Policy":
        """Changes the inference knobs (None keeps one): the initial noise's scale and the number
        of sampling steps. A compiled or captured sampler is rebuilt, since it holds the old ones."""
        set_sampling(self.config, noise_scale, steps)
        if self._acceleration[0] != "eager":
            self.accelerate(*self._acceleration)
        return self

    def validate_obs(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Checks keys, shapes, dtypes and finiteness; returns float32 tensors on our device."""
        if not self.normalizer.fitted:  # checked here, so that the tensor path stays free of data-dependent branches
            raise ValueError("the policy has no normaliser: call set_normalizer() with one fitted on the data")
        c = self.config
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a dict with 'point_cloud' and 'agent_pos', got {type(obs).__name__}")
        point_cloud = self._as_tensor("point_cloud", obs.get("point_cloud"), (c.n_obs_steps, None, c.point_dim))
        agent_pos = self._as_tensor("agent_pos", obs.get("agent_pos"), (c.n_obs_steps, c.state_dim))
        if point_cloud.shape[2] == 0:
            raise ValueError("'point_cloud' has 0 points; crop box empty or camera blocked?")
        if point_cloud.shape[0] != agent_pos.shape[0]:
            raise ValueError(
                f"batch sizes differ: point_cloud has {point_cloud.shape[0]}, agent_pos has {agent_pos.shape[0]}"
            )
        return {"point_cloud": point_cloud, "agent_pos": agent_pos}

    def _as_tensor(self, key: str, value: Any, trailing: tuple[int | None, ...]) -> torch.Tensor:
        expected = "(B, " + ", ".join("N" if d is None else str(d) for d in trailing) + ")"
        if value is None:
            raise ValueError(f"missing key {key!r}: expected an array of shape {expected}")
        if isinstance(value, np.ndarray):
            if not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"{key!r} has dtype {value.dtype}; expected a floating dtype")
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif not isinstance(value, torch.Tensor):
            raise ValueError(f"{key!r} must be a numpy array or torch tensor, got {type(value).__name__}")
        elif not value.is_floating_point():
            raise ValueError(f"{key!r} has dtype {value.dtype}; expected a floating dtype")
        shape_ok = value.dim() == len(trailing) + 1 and all(
            d is None or d == got for d, got in zip(trailing, value.shape[1:])
        )
        if not shape_ok:
            raise ValueError(f"{key!r} has shape {tuple(value.shape)}; expected {expected}")
        if not torch.isfinite(value).all():  # checked where the value is: host inputs cost the GPU no sync
            raise ValueError(f"{key!r} contains NaN or inf")
        return value.to(device=self.device, dtype=torch.float32)

    def save(self, path: str | os.PathLike, ema: "Policy | None" = None, extra: dict[str, Any] | None = None) -> None:
        """Writes config, normaliser, weights and (optionally) the weights of `ema`, a copy of
        this policy holding the averaged weights, to one file, atomically."""
        if ema is not None and not isinstance(ema, Policy):
            raise ValueError(f"ema must be a Policy holding the averaged weights, got {type(ema).__name__}")
        payload = {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "mp1_version": mp1.__version__,
            "policy": self.name,
            "config": config_to_dict(self.config),
            "state_dict": self.state_dict(),
            "ema_state_dict": None if ema is None else ema.state_dict(),
            "extra": extra or {},
        }
        payload["checksum"] = content_digest(payload)
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, use_ema: bool = True, device: str | torch.device = "cpu") -> "Policy":
        """Loads a policy file; the EMA weights are used when present and `use_ema`."""
        return cls.from_payload(read_policy_file(path), use_ema, device, source=str(path))

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], use_ema: bool = True, device: str | torch.device = "cpu", source: str = "the file"
    ) -> "Policy":
        """The policy in a payload from `read_policy_file`, for callers that also need its `extra`
        (reading, and checksumming, a paper-preset file once instead of twice)."""
        ema = payload.get("ema_state_dict")
        try:
            policy = cls(config_from_dict(payload["policy"], payload["config"]))
            policy.load_state_dict(ema if use_ema and ema is not None else payload["state_dict"])
        except Exception as error:  # a config or weights that do not fit together
            raise PolicyFileError(f"{source} holds an inconsistent policy: {str(error).splitlines()[0][:300]}") from None
        return policy.to(device).eval()


def set_sampling(config: PolicyConfig, noise_scale: float | None = None, steps: int | None = None) -> None:
    """The inference knobs of a policy config, checked (None keeps one)."""
    if noise_scale is not None:
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        config.noise_scale = float(noise_scale)
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        config.objective.sample_steps = int(steps)


def write_sampling_defaults(
    path: str | os.PathLike, out: str | os.PathLike | None = None, noise_scale: float | None = None,
    steps: int | None = None,
) -> PolicyConfig:
    """Rewrites a policy file (or writes a copy to `out`) whose inference knobs default to the
    given ones; weights and everything else stay as they are. Returns the new config."""
    payload = read_policy_file(path)
    config = config_from_dict(payload["policy"], payload["config"])
    set_sampling(config, noise_scale, steps)
    payload["config"] = config_to_dict(config)
    payload["format_version"] = FILE_FORMAT_VERSION
    payload["checksum"] = content_digest(payload)
    atomic_torch_save(payload, out or path)
    return config


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """Saves to a temporary file beside `path`, flushes it to disk, then renames it: a crash
    leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_policy_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a policy file without executing code from it (torch's weights_only loader)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated, foreign or hostile files
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        raise PolicyFileError(f"{path} is not a readable mp1 policy file (truncated or corrupt? {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise PolicyFileError(f"{path} is not an mp1 policy file")
    if payload.get("format_version") not in READABLE_VERSIONS:
        raise PolicyFileError(
            f"{path} has policy file format version {payload.get('format_version')}; "
            f"this mp1 reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if payload.get("policy") not in POLICY_CONFIGS:
        raise PolicyFileError(f"{path} holds unknown policy {payload.get('policy')!r}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise PolicyFileError(f"{path} is not a complete mp1 policy file (no {key})")
    if payload["format_version"] >= 2:
        try:
            digest = content_digest(payload)
        except (AttributeError, TypeError, RuntimeError) as error:
            raise PolicyFileError(f"{path} holds malformed weights ({error})") from None
        if digest != payload.get("checksum"):
            raise PolicyFileError(f"{path} is corrupt: its contents do not match the checksum written with them")
    return payload
