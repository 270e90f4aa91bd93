"""The GPU path, checked on CPU: bf16 autocast numerics (the JVP included) and accelerated
predict_action giving the same actions as eager."""

import numpy as np
import pytest
import torch

from mp1.bench import random_obs
from mp1.policies import make_policy
from mp1.runtime.normalizer import LinearNormalizer
from mp1.train import parse_overrides

TINY = {"unet": {"down_dims": [16, 32, 64], "time_embed_dim": 16}, "encoder": {"point_hidden_dims": [16, 32]}}


def tiny_policy(name):
    torch.manual_seed(0)
    policy = make_policy(name, preset="cpu", **TINY)
    c = policy.config
    dims = {"point_cloud": c.point_dim, "agent_pos": c.state_dim, "action": c.action_dim}
    policy.set_normalizer(LinearNormalizer(dims).fit({k: np.random.default_rng(0).random((64, d)) for k, d in dims.items()}))
    return policy


@pytest.mark.parametrize("name", ["mp1", "flowpolicy", "dp3"])
def test_bf16_autocast_matches_fp32(name):
    policy = tiny_policy(name).train()
    torch.manual_seed(1)
    data = {"obs": random_obs(policy, 32, 128, torch.device("cpu")), "action": torch.rand(32, 4, 4) * 2 - 1}
    losses, grads = [], []
    for bf16 in (False, True):
        torch.manual_seed(2)  # the same noise and times in both passes
        policy.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss, _ = policy.compute_loss(data)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
    assert losses[1] == pytest.approx(losses[0], rel=0.03)
    assert torch.isfinite(grads[1]).all()
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.98


def test_precision_is_checked():
    assert parse_overrides(["precision=bf16"]).precision == "bf16"
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        parse_overrides(["precision=fp16"])


def test_accelerate_rejects_what_it_cannot_do():
    policy = tiny_policy("mp1")
    with pytest.raises(ValueError, match="needs the policy on a CUDA device"):
        policy.accelerate("cuda_graph")
    with pytest.raises(ValueError, match="unknown mode"):
        policy.accelerate("tensorrt")


@pytest.mark.slow
def test_compiled_predict_action_equals_eager():
    policy = tiny_policy("mp1").eval()
    obs = random_obs(policy, 1, 128, torch.device("cpu"))
    eager = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"]
    policy.accelerate("compile")
    compiled = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert not torch.equal(compiled, policy.predict_action(obs)["action"])  # fresh noise still flows in
    policy.accelerate("eager")
    assert policy._fast_sampler is None
