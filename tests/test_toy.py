"""The 2-D conditional toy: each condition has two modes, so only a real generator can land
on a mode in one step; one-step flow matching lands between them."""

import pytest

from mp1.objectives import ConsistencyFlow, Diffusion, FlowMatching, MeanFlow
from mp1.toy import evaluate_toy, train_toy

CASES = {
    # name: (objective, sampling steps, training steps, bound on the on-mode fraction)
    "meanflow-1step": (MeanFlow(), 1, 2000, ">=0.6"),
    "flowmatching-1step": (FlowMatching(), 1, 1000, "<=0.05"),
    "consistencyflow-1step": (ConsistencyFlow(num_segments=1, second_branch_grad=False), 1, 2000, ">=0.25"),
    "ddim-10steps": (Diffusion(), 10, 1500, ">=0.8"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_toy_modes(name):
    objective, sample_steps, train_steps, bound = CASES[name]
    net, mixture = train_toy(objective, steps=train_steps, lr=2e-3)
    fraction, points, _ = evaluate_toy(objective, net, mixture, steps=sample_steps)
    op, value = bound[:2], float(bound[2:])
    print(f"{name}: {fraction:.3f} of samples on a correct mode")
    assert fraction >= value if op == ">=" else fraction <= value
    assert points.isfinite().all()
