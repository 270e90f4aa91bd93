"""What a robot computer needs to run a trained policy, and nothing else: point-cloud
preprocessing for real RGB-D frames, the normaliser, the policy file loader and the stateful
runner. It imports no simulator, no demonstration store and no trainer (torch, numpy and
fpsample only; `tests/test_runtime.py` checks), and `mp1.envs`, `mp1.evaluate` and
`mp1.train` build on it.

    from mp1.runtime import PolicyRunner, crop, depth_to_points, farthest_point_sample, load_policy

    runner = PolicyRunner(load_policy("policy_latest.pt"))
    cloud = farthest_point_sample(crop(depth_to_points(depth, cam_pos, cam_rot, intrinsics=K,
                                                       convention="opencv"), low, high), 512)
    action = runner.act({"point_cloud": cloud, "agent_pos": state})
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mp1.runtime.normalizer import LinearNormalizer
from mp1.runtime.perception import Camera, CloudMaker, CloudPipeline, make_cloud
from mp1.runtime.pointcloud import crop, depth_to_points, farthest_point_sample, intrinsics_from_fovy
from mp1.runtime.runner import PolicyRunner

if TYPE_CHECKING:
    import torch

    from mp1.policies import Policy


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True) -> Policy:
    """A policy file written by `mp1 train` (EMA weights when present), ready for inference.
    Reads tensors and plain data only (no code from the file) and checks the weights' checksum."""
    from mp1.policies import Policy  # the model code; mp1.policies itself builds on this package

    return Policy.load(path, use_ema=use_ema, device=device)


__all__ = [
    "Camera", "CloudMaker", "CloudPipeline", "LinearNormalizer", "PolicyRunner", "crop", "depth_to_points",
    "farthest_point_sample", "intrinsics_from_fovy", "load_policy", "make_cloud",
]
