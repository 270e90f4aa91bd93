"""Typed configurations of the policies, their presets, and command-line style overrides.

All policies share the encoder, the UNet and the data shapes; they differ in the objective
(and MP1 in its dispersive regulariser and r-embedding). A preset ("cpu" or "paper") sets the
network scale; overrides are nested dicts or dotted `key=value` strings, type-checked by
OmegaConf against the dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from mp1.nn import EncoderConfig, UnetConfig
from mp1.objectives import ConsistencyFlow, Diffusion, DispersiveLoss, FlowMatching, MeanFlow, Regression


@dataclass
class PolicyConfig:
    horizon: int = 4
    n_obs_steps: int = 2
    n_action_steps: int = 3
    action_dim: int = 4
    state_dim: int = 9
    point_dim: int = 3
    # The learning rate of this policy's training recipe; `mp1 train lr=...` overrides it.
    train_lr: float = 1e-4
    # Sampling, inference only: the initial noise is scaled by `noise_scale` (1: the distribution
    # trained on; 0: the network's answer from z = 0, deterministic); the number of network
    # evaluations is the objective's `sample_steps`. `mp1 eval`, `mp1 serve` and `mp1 sampling` set both.
    noise_scale: float = 1.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    unet: UnetConfig = field(default_factory=UnetConfig)
    dispersive: DispersiveLoss = field(default_factory=DispersiveLoss)

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1 or self.n_action_steps < 1:
            raise ValueError("n_obs_steps and n_action_steps must be at least 1")
        if not self.noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_obs_steps - 1 + n_action_steps = {self.n_obs_steps - 1 + self.n_action_steps} "
                f"exceeds horizon {self.horizon}"
            )
        if any(dim % self.unet.n_groups for dim in self.unet.down_dims):
            raise ValueError(f"unet.down_dims {self.unet.down_dims} must be multiples of unet.n_groups={self.unet.n_groups}")
        if self.unet.time_embed_dim < 4 or self.unet.time_embed_dim % 2:
            raise ValueError(f"unet.time_embed_dim must be even and at least 4, got {self.unet.time_embed_dim}")
        if any(not 0 <= level < len(self.unet.down_dims) for level in self.unet.feature_levels):
            raise ValueError(f"unet.feature_levels {self.unet.feature_levels} must index unet.down_dims")
        if self.horizon % 2 ** (len(self.unet.down_dims) - 1):
            raise ValueError(f"horizon {self.horizon} must be divisible by 2^(len(unet.down_dims) - 1)")


@dataclass
class MP1Config(PolicyConfig):
    """MeanFlow with MP1's settings and the dispersive loss on the first two down blocks."""

    objective: MeanFlow = field(default_factory=MeanFlow)
    unet: UnetConfig = field(default_factory=lambda: UnetConfig(r_embedding="r"))
    dispersive: DispersiveLoss = field(default_factory=lambda: DispersiveLoss(weight=0.5))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unet.r_embedding == "none":
            raise ValueError("MeanFlow needs r: set unet.r_embedding to 'r' or 't_minus_r'")


@dataclass
class MP1TunedConfig(MP1Config):
    """MP1 re-tuned for short training budgets: MeanFlow with MP1's settings and 1-NFE sampler,
    but the network predicts the clean action chunk (`prediction="x"`, `u = (z - x) / t`), no
    dispersive regulariser, and a higher learning rate (`train_lr`); chosen by the study in
    benchmarks/README.md ("The one-step policy at equal compute")."""

    objective: MeanFlow = field(default_factory=lambda: MeanFlow(prediction="x"))
    dispersive: DispersiveLoss = field(default_factory=DispersiveLoss)
    train_lr: float = 3e-4


@dataclass
class FlowPolicyConfig(PolicyConfig):
    objective: ConsistencyFlow = field(default_factory=ConsistencyFlow)


@dataclass
class DP3Config(PolicyConfig):
    objective: Diffusion = field(default_factory=Diffusion)


@dataclass
class FlowMatchingConfig(PolicyConfig):
    """Plain one-step flow matching: the ablation that shows what MeanFlow adds."""

    objective: FlowMatching = field(default_factory=FlowMatching)


@dataclass
class RegressionConfig(PolicyConfig):
    """A deterministic head on the same encoder and UNet (mp1.objectives.regression): the
    diagnostic of whether a generative objective is what limits a short training budget."""

    objective: Regression = field(default_factory=Regression)


POLICY_CONFIGS: dict[str, type[PolicyConfig]] = {
    "mp1": MP1Config,
    "mp1-tuned": MP1TunedConfig,
    "flowpolicy": FlowPolicyConfig,
    "dp3": DP3Config,
    "flowmatching": FlowMatchingConfig,
    "regression": RegressionConfig,
}

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"unet": {"down_dims": [64, 128, 256]}},
    "paper": {"unet": {"down_dims": [512, 1024, 2048]}},
}


def make_config(
    name: str, preset: str = "cpu", overrides: dict[str, Any] | list[str] | None = None
) -> PolicyConfig:
    """Builds a policy config from its name, a preset and overrides (dict or `a.b=value` list)."""
    if name not in POLICY_CONFIGS:
        raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICY_CONFIGS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    config = OmegaConf.merge(OmegaConf.structured(POLICY_CONFIGS[name]), PRESETS[preset])
    if isinstance(overrides, list):
        config = OmegaConf.merge(config, OmegaConf.from_dotlist(overrides))
    elif overrides:
        config = OmegaConf.merge(config, overrides)
    return OmegaConf.to_object(config)


def config_to_dict(config: PolicyConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config))


def config_from_dict(name: str, data: dict[str, Any]) -> PolicyConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(POLICY_CONFIGS[name]), data))
