"""The 2-D conditional toy: each condition has two modes, so only a real generator can land
on a mode in one step; one-step flow matching lands between them."""

import pytest

from mp1.objectives import ConsistencyFlow, Diffusion, FlowMatching, MeanFlow
from mp1.policies.config import MP1TunedConfig
from mp1.toy import evaluate_toy, train_toy

CASES = {
    # name: (objective, sampling steps, training steps, bound on the on-mode fraction)
    "meanflow-1step": (MeanFlow(), 1, 2000, ">=0.6"),
    "mp1-tuned-1step": (MP1TunedConfig().objective, 1, 1000, ">=0.7"),  # x-prediction: 82% here
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


def test_modes_covered_counts_both_modes_of_each_pair():
    import torch

    from mp1.toy import ToyMixture

    mixture = ToyMixture()
    labels = torch.arange(8) % 4
    both = mixture.centers  # mode k belongs to class k % 4: every mode hit once
    assert mixture.on_correct_mode(both, labels).all() and mixture.modes_covered(both, labels) == 8
    one_side = mixture.centers[labels]  # always the first mode of the pair
    assert mixture.modes_covered(one_side, labels) == 4
    assert mixture.modes_covered(torch.zeros(8, 2), labels) == 0  # the conditional mean: no mode


def test_noise_scale_zero_gives_one_point_per_condition():
    """At noise scale 0 a one-step sampler is a function of the condition alone, so it can
    cover at most one mode of each pair: the cost the knob has on multimodal data."""
    import torch

    from mp1.toy import ToyMixture, ToyNet

    torch.manual_seed(0)
    objective, mixture = MP1TunedConfig().objective, ToyMixture()
    net = ToyNet(mixture.num_classes)
    _, points, labels = evaluate_toy(objective, net, mixture, steps=1, samples=64, noise_scale=0.0)
    for label in labels.unique():
        assert torch.allclose(points[labels == label], points[labels == label][0])
    _, spread, labels = evaluate_toy(objective, net, mixture, steps=1, samples=64, noise_scale=0.5)
    assert not torch.allclose(spread[labels == labels[0]], spread[labels == labels[0]][0])
