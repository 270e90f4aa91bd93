"""The stateful side of a deployed policy: observation history in, one action per control step
out, a new chunk from the policy when the current one is used up."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import torch

from mp1.runtime.contract import ObservationContract
from mp1.runtime.perception import CloudMaker, CloudPipeline

if TYPE_CHECKING:  # imported by whoever loads the policy (mp1.runtime.load_policy)
    from mp1.policies import Policy


def recorded_cloud_maker(extra: dict) -> CloudMaker | None:
    """The cloud maker of the pipeline a policy file records (`extra`), if its store had one."""
    pipeline = extra.get("pipeline")
    return CloudMaker(CloudPipeline.from_dict(pipeline)) if pipeline else None


class PolicyRunner:
    """Keeps the last `n_obs_steps` observations and hands out the next action of the current
    chunk (`act`), asking the policy for a new chunk when the last one is used up; or a whole
    new chunk at once (`plan`), for a robot that executes chunks itself. The noise comes from
    a CPU generator seeded with `seed`, so a seed gives the same actions on any device; `reset`
    can reseed it, so that an episode's actions depend on its seed alone (served or evaluated).

    With a `cloud_maker` for the pipeline the policy was trained on (`PolicyRunner.from_file`
    makes it from the policy file), an observation may carry the raw frames instead of a cloud:
    `{"depth": one frame per camera, "colour": optional images, "camera_poses": optional per-call
    4x4 poses, "agent_pos": ...}`; the cloud is made exactly as the training data's was.

    Every step is checked against the policy's `ObservationContract` before it enters the
    history; where the contract records no point count, an episode keeps the count it began with."""

    def __init__(
        self, policy: Policy, seed: int = 0, cloud_maker: CloudMaker | None = None,
        contract: ObservationContract | None = None,
    ):
        self.policy = policy
        self.cloud_maker = cloud_maker
        pipeline = cloud_maker.pipeline.to_dict() if cloud_maker is not None else None
        self.contract = contract or ObservationContract.of(policy.config, {"pipeline": pipeline})
        self.generator = torch.Generator()
        self.latencies_ms: list[float] = []
        self.reset(seed)

    @classmethod
    def from_file(cls, path: str, device: str = "cpu", seed: int = 0) -> "PolicyRunner":
        """A runner for a policy file, with the cloud pipeline it records (if its store had one)."""
        from mp1.policies.policy import Policy, read_policy_file

        payload = read_policy_file(path)
        policy, extra = Policy.from_payload(payload, device=device, source=str(path)), payload["extra"]
        return cls(policy, seed, recorded_cloud_maker(extra), ObservationContract.of(policy.config, extra))

    def reset(self, seed: int | None = None) -> None:
        """A new episode: no history, no pending actions, and the noise reseeded when `seed` is given."""
        self.history: deque[dict[str, np.ndarray]] = deque(maxlen=self.policy.config.n_obs_steps)
        self.pending: deque[np.ndarray] = deque()
        self.episode_points: int | None = None  # the point count this episode began with
        if seed is not None:
            self.generator.manual_seed(seed)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.observe(obs)
        if not self.pending:
            self.pending.extend(self.predict_chunk())
        return self.pending.popleft()

    def plan_from(self, history: list[dict[str, np.ndarray]]) -> np.ndarray:
        """A new chunk from the given last observations (oldest first; fewer than `n_obs_steps`
        repeat the first), replacing the kept history: for a client that keeps its own."""
        if not 1 <= len(history) <= self.policy.config.n_obs_steps:
            raise ValueError(f"history must hold 1 to {self.policy.config.n_obs_steps} observations, got {len(history)}")
        self.history.clear()
        for obs in history:
            self.observe(obs)
        self.pending.clear()
        return self.predict_chunk()

    def plan(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """A new chunk (n_action_steps, Da) for this observation; nothing is left pending."""
        self.observe(obs)
        self.pending.clear()
        return self.predict_chunk()

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        # Checked copies: a driver that reuses its buffers must not rewrite the history kept here.
        obs = self.contract.check_step(obs, self.episode_points)
        if "depth" in obs:
            obs = {"point_cloud": self.cloud(obs), "agent_pos": obs["agent_pos"]}
        self.episode_points = len(obs["point_cloud"])
        self.history.append(obs)
        while len(self.history) < self.history.maxlen:  # the first step is repeated, as in training
            self.history.appendleft(self.history[0])

    def cloud(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The point cloud of an observation's raw frames, through the policy's pipeline."""
        if self.cloud_maker is None:
            raise ValueError("this policy records no cloud pipeline (its store had none): send 'point_cloud', not 'depth'")
        return self.cloud_maker(obs["depth"], obs.get("colour"), obs.get("camera_poses"))

    def predict_chunk(self) -> np.ndarray:
        batch = {key: np.stack([h[key] for h in self.history])[None] for key in ("point_cloud", "agent_pos")}
        start = time.perf_counter()
        chunk = self.policy.predict_action(batch, generator=self.generator)["action"][0]
        if chunk.device.type == "cuda":
            torch.cuda.synchronize(chunk.device)
        self.latencies_ms.append((time.perf_counter() - start) * 1e3)
        return chunk.cpu().numpy()
