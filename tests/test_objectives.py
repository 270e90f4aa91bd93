import math

import pytest
import torch

from mp1.objectives import ConsistencyFlow, Diffusion, DispersiveLoss, FlowMatching, MeanFlow, Regression
from mp1.objectives.meanflow import MEANFLOW_PRESETS


class SmoothNet(torch.nn.Module):
    """A small smooth MLP u(z, r, t | c), returning features as well when asked."""

    def __init__(self, dim: int = 3, cond_dim: int = 2, with_features: bool = False):
        super().__init__()
        self.hidden = torch.nn.Sequential(torch.nn.Linear(dim + 2 + cond_dim, 32), torch.nn.Tanh())
        self.out = torch.nn.Linear(32, dim)
        self.with_features = with_features

    def forward(self, z, r, t, cond):
        h = self.hidden(torch.cat([z, r[:, None], t[:, None], cond], dim=-1))
        out = self.out(h)
        return (out, [h]) if self.with_features else out


OBJECTIVES = [
    MeanFlow(), MeanFlow.from_preset("meanflow"), MeanFlow(loss_space="v", guidance="none"), MeanFlow(prediction="x"),
    MeanFlow(warm_start_steps=10, direction_weight=0.5), MeanFlow(boundary_fraction=0.25, time_distribution="uniform"),
    FlowMatching(), ConsistencyFlow(), Diffusion(), Regression(),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: type(o).__name__)
def test_loss_and_sample_shapes(objective):
    torch.manual_seed(0)
    net = SmoothNet()
    x, cond = torch.rand(8, 3) * 2 - 1, torch.randn(8, 2)
    loss, info = objective.loss(net, x, cond)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(v.dim() == 0 and not v.requires_grad for v in info.values()) and "loss" in info
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    sample = objective.sample(net, torch.randn(5, 3), cond[:5])
    assert sample.shape == (5, 3) and sample.dtype == torch.float32


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: type(o).__name__)
def test_feature_loss_is_added_and_differentiable(objective):
    torch.manual_seed(0)
    net = SmoothNet(with_features=True)
    dispersive = DispersiveLoss(weight=0.5)
    loss, info = objective.loss(net, torch.randn(8, 3), torch.randn(8, 2), feature_loss=dispersive)
    assert info["feature_loss"] < 0  # InfoNCE-L2 of a non-collapsed batch is negative
    loss.backward()
    assert net.hidden[0].weight.grad.abs().sum() > 0


def test_meanflow_presets_match_design():
    mp1, paper = MeanFlow.from_preset("mp1"), MeanFlow.from_preset("meanflow")
    assert mp1 == MeanFlow()
    assert (mp1.equal_times_fraction, mp1.adaptive_weight_power, mp1.adaptive_weight_eps) == (0.5, 0.5, 1e-3)
    assert (mp1.guidance, mp1.guidance_weight, mp1.error_reduction) == ("self", 2.0, "mean")
    assert (paper.equal_times_fraction, paper.adaptive_weight_power, paper.adaptive_weight_eps) == (0.75, 1.0, 1e-2)
    assert (paper.guidance, paper.error_reduction) == ("cfg", "sum")
    assert set(MEANFLOW_PRESETS) == {"mp1", "meanflow"}


def test_meanflow_time_sampling():
    torch.manual_seed(0)
    r, t = MeanFlow().sample_times(20_000, torch.device("cpu"))
    assert (r <= t).all() and ((0 < r) & (t < 1)).all()
    assert abs((r == t).float().mean().item() - 0.5) < 0.02


def test_meanflow_boundary_share_and_uniform_times():
    torch.manual_seed(0)
    r, t = MeanFlow(boundary_fraction=0.3).sample_times(20_000, torch.device("cpu"))
    boundary = (r == 0) & (t == 1)
    assert abs(boundary.float().mean().item() - 0.3) < 0.02 and abs((r == t).float().mean().item() - 0.5) < 0.02
    r, t = MeanFlow(time_distribution="uniform", equal_times_fraction=0.0).sample_times(20_000, torch.device("cpu"))
    # the larger of two uniform draws has mean 2/3, the smaller 1/3 (logit-normal(-0.4, 1) gives less)
    assert t.mean().item() == pytest.approx(2 / 3, abs=0.01) and r.mean().item() == pytest.approx(1 / 3, abs=0.01)
    with pytest.raises(ValueError, match="boundary_fraction"):
        MeanFlow(equal_times_fraction=0.5, boundary_fraction=0.6)


def test_regression_is_deterministic_and_learns_the_conditional_mean():
    """Whatever the noise, the same chunk; trained on two targets per condition, their mean."""
    torch.manual_seed(0)
    net, objective = SmoothNet(), Regression()
    cond = torch.randn(2, 2)
    targets = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.cat([targets + 0.5, targets - 0.5])  # two modes, +-0.5 about each target
    for _ in range(500):
        loss, _ = objective.loss(net, x, cond.repeat(2, 1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        first, second = objective.sample(net, torch.randn(2, 3), cond), objective.sample(net, torch.randn(2, 3), cond)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, targets, atol=0.05, rtol=0)


def test_jvp_forms_agree():
    torch.manual_seed(0)
    net = SmoothNet(with_features=True).double()
    z, cond, velocity = torch.randn(6, 3).double(), torch.randn(6, 2).double(), torch.randn(6, 3).double()
    r, t = torch.rand(6).double() * 0.4, 0.5 + torch.rand(6).double() * 0.4
    results = {
        form: MeanFlow(jvp=form, finite_difference_eps=1e-5).time_derivative(net, z, r, t, cond, velocity)
        for form in ("forward", "double_backward", "finite_difference")
    }
    u_ref, dudt_ref, _ = results["forward"]
    for form, (u, dudt, features) in results.items():
        torch.testing.assert_close(u, u_ref)
        torch.testing.assert_close(dudt, dudt_ref, rtol=1e-6, atol=1e-7)
        assert len(features) == 1, form
    assert dudt_ref.abs().mean() > 1e-2  # a non-trivial derivative was compared


@pytest.mark.parametrize("jvp", ["forward", "double_backward", "finite_difference"])
def test_meanflow_target_equals_closed_form_average_velocity(jvp):
    """For the flow dz/dt = a z, the average velocity over [r, t] is
    u = z_t (1 - exp(-a (t - r))) / (t - r); the MeanFlow target built from u must equal u."""
    a = 1.7

    def average_velocity(z, r, t, cond):
        gap = (t - r)[:, None]
        safe_gap = torch.where(gap > 0, gap, torch.ones_like(gap))
        return torch.where(gap > 0, z * (1 - torch.exp(-a * gap)) / safe_gap, a * z)

    torch.manual_seed(0)
    z = torch.randn(16, 3, dtype=torch.float64)
    r = torch.rand(16, dtype=torch.float64) * 0.5
    t = r + torch.rand(16, dtype=torch.float64) * 0.5
    u, target, _ = MeanFlow(jvp=jvp, finite_difference_eps=1e-6).regression_target(
        average_velocity, z, r, t, torch.zeros(16, 0), a * z, a * z
    )
    torch.testing.assert_close(target, u, rtol=1e-6, atol=1e-6)
    # The identity is not trivially satisfied: the derivative term matters.
    assert (a * z - u).abs().max() > 0.1


def test_meanflow_few_step_sampling_follows_the_flow():
    """Sampling walks t = 1 -> 0 with z <- z - (t - r) u; with the exact average velocity of
    dz/dt = a z, any number of steps lands on z_1 exp(-a)."""
    a = 0.8
    net = lambda z, r, t, cond: z * (1 - torch.exp(-a * (t - r)[:, None])) / (t - r)[:, None]
    noise = torch.randn(4, 2, dtype=torch.float64)
    for steps in (1, 3):
        torch.testing.assert_close(MeanFlow().sample(net, noise, torch.zeros(4, 0), steps=steps), noise * math.exp(-a))


def test_dispersive_loss_variants():
    torch.manual_seed(0)
    spread = torch.randn(16, 8, 4)
    collapsed = spread[:1].expand(16, 8, 4).clone()
    for variant in ("infonce_l2", "cosine", "hinge"):
        for normalization in ("batch_max", "feature_dim", "none"):
            loss = DispersiveLoss(weight=1.0, variant=variant, normalization=normalization)
            assert loss([spread]) < loss([collapsed]) + 1e-6, (variant, normalization)
    infonce = DispersiveLoss(weight=0.5)
    assert infonce([collapsed]).item() == pytest.approx(0.0, abs=1e-6)
    assert infonce([spread, spread]).item() == pytest.approx(2 * infonce([spread]).item())
    # Its gradient pushes features apart: one step of descent increases pairwise distances.
    h = spread.clone().requires_grad_(True)
    infonce([h]).backward()
    moved = h - 0.5 * h.grad
    assert torch.pdist(moved.flatten(1)).mean() > torch.pdist(spread.flatten(1)).mean()
    assert not DispersiveLoss().enabled


def test_meanflow_warm_start_schedule():
    objective = MeanFlow(equal_times_fraction=0.25, warm_start_steps=100)
    assert [objective.equal_times_at(step) for step in (0, 50, 100, 1000)] == [1.0, 0.625, 0.25, 0.25]
    torch.manual_seed(0)
    r, t = objective.sample_times(1000, torch.device("cpu"), step=0)
    assert torch.equal(r, t)  # pure flow matching at the start
    r, t = objective.sample_times(20_000, torch.device("cpu"), step=100)
    assert abs((r == t).float().mean().item() - 0.25) < 0.02
    assert MeanFlow().equal_times_at(0) == 0.5  # no warm start by default


def test_meanflow_x_prediction_one_step_returns_the_networks_x():
    """With u = (z - x) / t, the one-step jump z_1 - u(z_1, 0, 1) is the network's x output."""
    x_net = lambda z, r, t, cond: torch.tanh(z) * 0.5 + cond
    noise, cond = torch.randn(5, 3), torch.randn(5, 3)
    sample = MeanFlow(prediction="x").sample(x_net, noise, cond, steps=1)
    torch.testing.assert_close(sample, x_net(noise, torch.zeros(5), torch.ones(5), cond))
    u = MeanFlow(prediction="x").velocity_net(x_net)(noise, torch.zeros(5), torch.full((5,), 0.01), cond)
    torch.testing.assert_close(u, (noise - x_net(noise, None, None, cond)) / 0.05)  # t clamped at 0.05


@pytest.mark.parametrize("loss_space", ["u", "v"])
def test_meanflow_jvp_tangent_by_loss_space(loss_space, monkeypatch):
    """MP1 differentiates along the conditional velocity e - x; the v-loss along the network's
    own instantaneous velocity u(z, t, t | c)."""
    torch.manual_seed(0)
    net = SmoothNet()
    seen = {}
    original = MeanFlow.time_derivative

    def spy(self, net_, z, r, t, cond, tangent):
        seen.update(z=z, t=t, cond=cond, tangent=tangent)
        return original(self, net_, z, r, t, cond, tangent)

    monkeypatch.setattr(MeanFlow, "time_derivative", spy)
    x, cond = torch.randn(8, 3), torch.randn(8, 2)
    torch.manual_seed(1)
    MeanFlow(loss_space=loss_space, guidance="none").loss(net, x, cond)
    torch.manual_seed(1)
    noise = torch.randn_like(x)
    if loss_space == "u":
        torch.testing.assert_close(seen["tangent"], noise - x)
    else:
        with torch.no_grad():
            expected = net(seen["z"], seen["t"], seen["t"], seen["cond"])
        torch.testing.assert_close(seen["tangent"], expected)


def test_meanflow_direction_term_adds_weighted_misalignment():
    torch.manual_seed(0)
    net, x, cond = SmoothNet(), torch.randn(8, 3), torch.randn(8, 2)
    torch.manual_seed(1)
    plain, _ = MeanFlow().loss(net, x, cond)
    torch.manual_seed(1)
    aligned, info = MeanFlow(direction_weight=0.3).loss(net, x, cond)
    assert 0 < info["misalignment"] <= 2
    assert aligned.item() == pytest.approx(plain.item() + 0.3 * info["misalignment"].item(), rel=1e-5)


def test_meanflow_rejects_bad_settings():
    for bad in ({"equal_times_fraction": 1.5}, {"warm_start_steps": -1}, {"direction_weight": -1.0},
                {"x_prediction_min_t": 0.0}):
        with pytest.raises(ValueError):
            MeanFlow(**bad)
