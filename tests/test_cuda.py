"""The GPU path on a GPU: skipped, with this reason, where torch sees no CUDA device (CI has none;
`pytest tests/test_cuda.py` on a CUDA machine runs it). Its CPU-side logic is tested in
test_gpu_path.py, and `benchmarks/gpu_check.sh` measures the same paths' speed."""

import numpy as np
import pytest
import torch

from mp1.bench import benchmark_policy, measure_latency, measure_train_step, random_obs
from mp1.data.demos import DemoConfig, generate_demos
from mp1.train import Trainer, parse_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")

TINY = {"unet": {"down_dims": [16, 32, 64], "time_embed_dim": 16}, "encoder": {"point_hidden_dims": [16, 32]}}


@pytest.mark.parametrize("name", ["mp1", "dp3"])
def test_latency_modes_run_and_agree_with_eager(name):
    results = measure_latency(name, "cpu", torch.device("cuda"), calls=5, warmup=2, modes=("eager", "cuda_graph"),
                              precisions=("fp32", "bf16"))
    assert [(r.mode, r.precision) for r in results] == [("eager", "fp32"), ("cuda_graph", "fp32"),
                                                       ("eager", "bf16"), ("cuda_graph", "bf16")]
    assert all(not r.error and np.isfinite(r.p50_ms) for r in results), [r.error for r in results]
    assert results[1].max_abs_diff <= 1e-4  # graph replay returns the eager actions
    assert results[3].max_abs_diff <= 0.05  # bf16 weights: rounding only
    step = measure_train_step(name, "cpu", torch.device("cuda"), batch=8, steps=2, precision="bf16")
    assert np.isfinite(step.loss) and step.ms_per_step > 0


def test_seeded_actions_match_the_cpu():
    policy = benchmark_policy("mp1", "cpu", torch.device("cpu")).eval()
    obs = random_obs(policy, 1, 128, torch.device("cpu"))
    on_cpu = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))["action"]
    policy.cuda()
    on_gpu = policy.predict_action({k: v.cuda() for k, v in obs.items()}, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(on_gpu["action"].cpu(), on_cpu, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        policy.predict_action(obs, generator=torch.Generator("cuda"))


def test_training_and_in_process_evaluation_on_cuda(tmp_path):
    generate_demos(["metaworld/button-press"], tmp_path / "demos", DemoConfig(episodes=2, steps_after_success=2))
    model = [f"model.{k}.{key}={value}".replace(" ", "") for k, group in TINY.items() for key, value in group.items()]
    config = parse_overrides(model + [
        f"data_dir={tmp_path / 'demos'}", f"run_dir={tmp_path / 'run'}", "demos=2", "batch_size=16", "epochs=2",
        "eval_every=1", "eval_episodes=1", "final_eval_episodes=1", "eval_max_steps=12", "video=false",
        "device=cuda", "precision=bf16",
    ])
    summary = Trainer(config).train()
    assert summary["device"].startswith("cuda") and summary["steps_per_second"] > 0
    assert summary["strict_protocol"]["episodes"] == 1
