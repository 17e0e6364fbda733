"""Composition with Pyro: distributions, pyro.module, SVI fitting, guides."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

from pyro_overparam_flows import (
    ConstrainedMonotone,
    UnconstrainedMonotone,
    conditional_unconstrained_monotone_autoregressive,
    constrained_monotone,
    unconstrained_monotone,
    unconstrained_monotone_autoregressive,
)
from pyro_overparam_flows.datasets import mixture_of_gaussians
from pyro_overparam_flows.training import density, fit_density, negative_log_likelihood

from helpers import perturb_

HELPERS = {
    "constrained": lambda: constrained_monotone(2, width=16),
    "bounded": lambda: constrained_monotone(2, width=16, tail=False),
    "unconstrained": lambda: unconstrained_monotone(2, width=16),
    "quadrature": lambda: unconstrained_monotone(2, width=16, activation="tanh", phi="softplus"),
}


def standard_normal(dim, like):
    return dist.Normal(like.new_zeros(dim), like.new_ones(dim)).to_event(1)


@pytest.mark.parametrize("name", list(HELPERS))
def test_transformed_distribution_samples_and_scores(name, dtype, device):
    transform = perturb_(HELPERS[name]()).to(device=device, dtype=dtype)
    pyro.module(name, transform)
    assert set(pyro.get_param_store().keys()) == {
        f"{name}$$${n}" for n, _ in transform.named_parameters()
    }
    like = torch.zeros((), dtype=dtype, device=device)
    flow = dist.TransformedDistribution(standard_normal(2, like), [transform])
    samples = flow.sample((100,))
    assert samples.shape == (100, 2) and samples.dtype == dtype
    log_prob = flow.log_prob(samples)
    assert log_prob.shape == (100,) and bool(torch.isfinite(log_prob).all())
    # Score by the change of variables, independently: log N(f^-1(y)) - log f'(f^-1(y)).
    z = transform.inv(samples.clone())
    expected = standard_normal(2, like).log_prob(z) - transform.log_abs_det_jacobian(z, samples)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(log_prob, expected, rtol=tolerance, atol=tolerance)
    # rsample is differentiable with respect to the flow's parameters.
    flow.rsample((10,)).sum().backward()
    assert all(p.grad is not None for p in transform.parameters())


@pytest.mark.parametrize("name", list(HELPERS))
def test_inverse_direction_scores_data(name, dtype):
    transform = perturb_(HELPERS[name]()).to(dtype)
    pyro.module(name, transform)
    data = torch.randn(50, 2, dtype=dtype)
    flow = dist.TransformedDistribution(standard_normal(2, data), [transform.inv])
    y = transform(data)
    expected = standard_normal(2, data).log_prob(y) + transform.log_abs_det_jacobian(data, y)
    torch.testing.assert_close(flow.log_prob(data), expected)
    if name != "bounded":  # a bounded map cannot invert base samples beyond its range
        assert flow.sample((7,)).shape == (7, 2)


def test_composes_with_pyro_transforms_and_is_a_valid_density():
    # A chain with Pyro's own affine transform integrates to one. a >= 0 keeps N >= 0, so f maps
    # onto the real line (a map onto a half-line would leave mass out, correctly).
    transform = perturb_(unconstrained_monotone(1, width=8), scale=0.5).double()
    with torch.no_grad():
        transform.output_weight.abs_()
    affine = dist.transforms.AffineTransform(torch.tensor([0.5]).double(), 2.0, event_dim=1)
    base = standard_normal(1, torch.zeros((), dtype=torch.float64))
    flow = dist.TransformedDistribution(base, [affine, transform.inv])
    grid = torch.linspace(-40, 40, 400_001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        mass = torch.trapezoid(flow.log_prob(grid).exp(), grid.squeeze(-1))
    assert float(mass) == pytest.approx(1.0, abs=1e-6)


def test_flow_guide_for_svi():
    # A flow guide q(z) = flow(N(0, 1)) fitted by SVI to a skewed target: z = log Z, Z ~ Gamma.
    gamma = dist.Gamma(torch.tensor([3.0]), torch.tensor([2.0])).to_event(1)
    target = dist.TransformedDistribution(gamma, [dist.transforms.ExpTransform().inv])
    transform = constrained_monotone(1, width=16)

    def model():
        pyro.sample("z", target)

    def guide():
        pyro.module("guide_flow", transform)
        pyro.sample(
            "z", dist.TransformedDistribution(standard_normal(1, torch.zeros(())), [transform])
        )

    elbo = Trace_ELBO(num_particles=32, vectorize_particles=True)
    svi = SVI(model, guide, ClippedAdam({"lr": 3e-2, "lrd": 0.995}), elbo)
    for _ in range(600):
        svi.step()
    with torch.no_grad():
        z = transform(standard_normal(1, torch.zeros(())).sample((20000,)))
    # log Z for Z ~ Gamma(3, 2) has mean digamma(3) - log 2 and variance trigamma(3).
    three = torch.tensor(3.0)
    assert float(z.mean()) == pytest.approx(float(torch.digamma(three)) - 0.6931472, abs=0.03)
    assert float(z.var()) == pytest.approx(float(torch.polygamma(1, three)), rel=0.1)


@pytest.mark.parametrize(
    "factory,steps",
    [
        (lambda: unconstrained_monotone(1, width=64), 500),
        (lambda: constrained_monotone(1, width=64), 600),
    ],
    ids=["unconstrained", "constrained"],
)
def test_fit_of_the_mixture_reaches_the_true_test_nll(factory, steps):
    data = mixture_of_gaussians(4000, 4000, dtype=torch.float32)
    true_nll = float(-data.distribution.log_prob(data.test.double()).mean())
    transform = factory()
    losses = fit_density(transform, data.train, steps=steps, learning_rate=2e-2, progress=False)
    assert losses[-1] < losses[0]
    assert negative_log_likelihood(transform, data.test) - true_nll < 0.05
    assert set(pyro.get_param_store().keys()) == {
        f"flow$$${n}" for n, _ in transform.named_parameters()
    }


def test_density_matches_pyro_param_store_after_fit():
    transform = unconstrained_monotone(1, width=8)
    data = torch.randn(128, 1)
    fit_density(transform, data, steps=5, progress=False)
    stored = dict(pyro.get_param_store().named_parameters())
    for name, parameter in transform.named_parameters():
        assert stored[f"flow$$${name}"] is parameter
    assert density(transform, data).log_prob(data).shape == (128,)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: UnconstrainedMonotone(1, 8),
        lambda: ConstrainedMonotone(1, 8),
        lambda: unconstrained_monotone_autoregressive(2, 8),
    ],
)
def test_fixed_data_every_step_with_an_optimizer_that_writes_data(factory):
    # Pyro's ClippedAdam updates p.data, which leaves version counters alone: scoring the same
    # data tensor every step must still recompute (no stale output, no freed graph).
    transform = factory()
    dim = transform.input_dim
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    density = dist.TransformedDistribution(base, [transform.inv])
    data = 2.0 + torch.randn(64, dim)
    optimizer = TorchClippedAdam(transform.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = -density.log_prob(data).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    with torch.no_grad():
        fresh = -dist.TransformedDistribution(base, [transform.inv]).log_prob(data.clone()).mean()
        cached = -density.log_prob(data).mean()
    assert float(cached) == pytest.approx(float(fresh), rel=1e-6)


def test_no_cached_answer_survives_a_clipped_adam_step_through_another_condition():
    # A .condition(context) kept for evaluation while the flow trains through other
    # .condition() objects with Pyro's ClippedAdam (which writes p.data): its cached pair must
    # not answer after a step, while it still serves sample-then-score before one.
    flow = conditional_unconstrained_monotone_autoregressive(2, 3, width=8)
    evaluator = flow.condition(torch.randn(3))
    z = torch.randn(5, 2)
    y = evaluator(z)
    assert evaluator.inv(y) is z  # sample then score: from the cache
    data, context = torch.randn(64, 2), torch.randn(64, 3)
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)

    def model():
        pyro.module("flow", flow)
        density = dist.ConditionalTransformedDistribution(base, [flow]).condition(context)
        with pyro.plate("n", 64):
            pyro.sample("x", density, obs=data)

    svi = SVI(model, lambda: None, ClippedAdam({"lr": 0.1}), Trace_ELBO())
    svi.step()
    recomputed = evaluator.inv(y)
    assert recomputed is not z
    torch.testing.assert_close(recomputed, evaluator.inv(y.clone()))
    assert not torch.allclose(recomputed, z)


def test_cache_answers_only_the_opposite_direction_and_tracks_requires_grad():
    transform = UnconstrainedMonotone(2, 8)
    x = torch.randn(3, 2)
    y = transform(x)
    assert transform.inv(y) is x  # a sample scored: from the cache
    assert transform(x) is not y  # the same input again: recomputed
    transform.requires_grad_(False)
    y = transform(x)
    assert not y.requires_grad
    transform.requires_grad_(True)
    assert transform(x).requires_grad
