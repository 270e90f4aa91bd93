"""Policies: MP1 (MeanFlow + dispersive loss), FlowPolicy (consistency flow), DP3 (diffusion),
and plain flow matching, all on the same point-cloud encoder and UNet."""

from __future__ import annotations

from typing import Any

from mp1.policies.config import POLICY_CONFIGS, PRESETS, PolicyConfig, make_config
from mp1.runtime.normalizer import LinearNormalizer
from mp1.policies.policy import Policy, PolicyFileError

POLICY_NAMES = tuple(POLICY_CONFIGS)


def make_policy(name: str, preset: str = "cpu", **overrides: Any) -> Policy:
    """E.g. `make_policy("mp1", preset="paper", dispersive={"weight": 0.0}, action_dim=26)`."""
    return Policy(make_config(name, preset, overrides))


__all__ = [
    "POLICY_NAMES", "PRESETS", "LinearNormalizer", "Policy", "PolicyConfig", "PolicyFileError",
    "make_config", "make_policy",
]
