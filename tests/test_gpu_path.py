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


@pytest.mark.parametrize("name", ["mp1", "flowpolicy", "dp3"])
def test_bf16_inference_runs_a_copy_and_stays_close(name):
    policy = tiny_policy(name).eval()
    obs = random_obs(policy, 2, 128, torch.device("cpu"))
    keys = set(policy.state_dict())

    def actions():
        return policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"]

    reference = actions()
    policy.accelerate("eager", precision="bf16")
    low = actions()
    assert low.dtype == torch.float32 and not torch.equal(low, reference)  # the bf16 copy did the work ...
    scale = reference.abs().max()
    assert (low - reference).abs().max() <= 0.03 * scale  # ... within bf16 rounding of float32's actions
    assert all(p.dtype == torch.float32 for p in policy.parameters()) and set(policy.state_dict()) == keys
    policy.accelerate("eager")
    assert torch.equal(actions(), reference)
    with pytest.raises(ValueError, match="unknown precision"):
        policy.accelerate("eager", precision="fp16")


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


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh end to end at toy sizes on the CPU (the GPU run is the benchmark)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tiny = " ".join(f"model.{part}.{key}={value}".replace(" ", "") for part, keys in TINY.items() for key, value in keys.items())
    settings = dict(DEVICE="cpu", PRESET="cpu", PAPER_PRESET="cpu", CALLS="2", WARMUP="1", TRAIN_STEPS="1", TRAIN_BATCH="2",
                    EPOCHS="1", PAPER_EPOCHS="1", DEMOS="1", EPISODES="1", JOBS="1", COMPILE_TIMEOUT="1", TRAIN_ARGS=tiny,
                    OUT=str(tmp_path), MP1=f"{sys.executable} -m mp1", OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                            timeout=900, env={**os.environ, **settings})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "cuda_graph  fp32" in summary and "needs the policy on a CUDA device" in summary  # the mode is attempted
    assert "eager       bf16" in summary
    for run in ("strict-mp1-cpu-fp32", "mp1-cpu-fp32", "mp1-cpu-bf16", "dp3-cpu-fp32", "dp3-cpu-bf16"):
        assert run in summary, run
    assert "strict: " in summary and "MP1 step / DP3 step (bf16)" in summary and "gpu_check took" in summary
    assert (tmp_path / "latency_cpu_compile.failed").exists()  # 1 s is too short to compile: recorded, not fatal


def test_latency_at_each_sampling_step_count():
    """`mp1 bench latency --steps 1,2` times the flow policies at each step count (DP3 keeps its
    DDIM steps) and gives DP3's latency over each."""
    from dataclasses import asdict

    from mp1.bench import format_report, measure_latency

    cpu = torch.device("cpu")
    one_step = measure_latency("mp1-tuned", "cpu", cpu, calls=2, warmup=1, steps=(1, 2))
    assert [r.nfe for r in one_step] == [1, 2] and all(r.max_abs_diff == 0 and not r.error for r in one_step)
    dp3 = measure_latency("dp3", "cpu", cpu, calls=1, warmup=0, steps=(1, 2))
    assert [r.nfe for r in dp3] == [10]
    text = format_report({"device": "cpu", "results": [asdict(r) for r in one_step + dp3], "training": []})
    assert "DP3 / mp1-tuned (1 step) latency (eager, fp32)" in text and "DP3 / mp1-tuned (2 steps) latency" in text
