"""Guides: the flows inside Pyro's AutoNormalizingFlow, and AutoMonotoneFlow under SVI, with
Predictive and posterior summaries."""

from __future__ import annotations

import functools
import math
from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal, AutoNormalizingFlow

from pyro_overparam_flows import (
    constrained_monotone_autoregressive,
    constrained_monotone_coupling,
    unconstrained_monotone,
    unconstrained_monotone_autoregressive,
    unconstrained_monotone_coupling,
)
from pyro_overparam_flows.guides import AutoMonotoneFlow


def conjugate():
    """z ~ N(0, I_3), x ~ N(z, I) observed at 1: the posterior is N(1/2, I/2) per coordinate."""
    z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=torch.ones(3))


def log_normal():
    """A positive latent with no data: the posterior is the LogNormal(0, 1) prior."""
    pyro.sample("scale", dist.LogNormal(0.0, 1.0))


def funnel():
    """Neal's funnel in 10-D: y ~ N(0, 3), x_i | y ~ N(0, exp(y / 2)), i = 1..9."""
    y = pyro.sample("y", dist.Normal(0.0, 3.0))
    with pyro.plate("dims", 9):
        pyro.sample("x", dist.Normal(0.0, torch.exp(y / 2)))


def eight_schools():
    """The centered eight schools model (Rubin 1981; Gelman et al., BDA)."""
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def train(
    model, guide, steps: int, lr: float = 1e-2, particles: int = 1, decay: bool = True
) -> list[float]:
    """Adam whose learning rate decays to a hundredth over the run (the gradient noise of a
    flow's many parameters otherwise keeps the guide wandering at the end), or stays at ``lr``."""
    pyro.set_rng_seed(0)
    optimizer = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / steps) if decay else 1.0})
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1)
    svi = SVI(model, guide, optimizer, loss)
    return [svi.step() for _ in range(steps)]


def elbo(model, guide, particles: int = 2000) -> float:
    pyro.set_rng_seed(1)
    estimator = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    return -estimator.loss(model, guide)


def regression(n: int = 200, p: int = 5, sigma: float = 2.0, prior: float = 10.0):
    """A Bayesian linear regression with known noise: the posterior of (intercept, coef) is
    Gaussian, with the mean and standard deviations returned."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, p, generator=generator)
    y = 1.0 + x @ torch.randn(p, generator=generator) + sigma * torch.randn(n, generator=generator)
    design = torch.cat([torch.ones(n, 1), x], 1).double()
    covariance = torch.linalg.inv(
        design.T @ design / sigma**2 + torch.eye(p + 1).double() / prior**2
    )
    mean = covariance @ design.T @ y.double() / sigma**2

    def model():
        intercept = pyro.sample("intercept", dist.Normal(0.0, prior))
        coef = pyro.sample("coef", dist.Normal(torch.zeros(p), prior).to_event(1))
        with pyro.plate("data", n):
            pyro.sample("y", dist.Normal(intercept + (coef * x).sum(-1), sigma), obs=y)

    return model, mean, covariance.diagonal().sqrt()


FLOW_LINES = {
    "unconstrained_monotone_autoregressive": partial(
        unconstrained_monotone_autoregressive, width=8
    ),
    "constrained_monotone_autoregressive": partial(constrained_monotone_autoregressive, width=8),
    "unconstrained_monotone_coupling": partial(unconstrained_monotone_coupling, width=8),
    "constrained_monotone_coupling": partial(constrained_monotone_coupling, width=8),
    "unconstrained_monotone": partial(unconstrained_monotone, width=8),
}


@pytest.mark.parametrize("name", list(FLOW_LINES))
def test_flows_inside_pyros_auto_normalizing_flow(name):
    guide = AutoNormalizingFlow(conjugate, FLOW_LINES[name])
    losses = train(conjugate, guide, 400, lr=3e-2)
    assert all(math.isfinite(loss) for loss in losses)
    # The exact posterior's ELBO is the log evidence, log N(1; 0, 2) per coordinate. A single
    # coupling layer leaves its first coordinate at the base N(0, 1), KL(N(0, 1) || N(1/2, 1/2))
    # = 1/2 log(1/2) + 5/4 - 1/2 below it at best.
    evidence = 3 * float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(torch.tensor(1.0)))
    best = evidence - (0.5 * math.log(0.5) + 0.75 if "coupling" in name else 0.0)
    assert elbo(conjugate, guide) == pytest.approx(best, abs=0.15)
    samples = Predictive(conjugate, guide=guide, num_samples=2000)()["z"]
    assert samples.shape == (2000, 3)
    reached = slice(1, 3) if "coupling" in name else slice(0, 3)
    mean = samples.mean(0)[reached]
    torch.testing.assert_close(mean, torch.full_like(mean, 0.5), atol=0.1, rtol=0)
    names = set(pyro.get_param_store().keys())
    assert any("transform" in n for n in names)


def test_auto_monotone_flow_beats_auto_normal_on_the_funnel():
    normal = AutoNormal(funnel)
    train(funnel, normal, 500)
    for family in ("unconstrained", "constrained"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        flow = AutoMonotoneFlow(funnel, family=family, width=16)
        losses = train(funnel, flow, 500)
        assert all(math.isfinite(loss) for loss in losses)
        # The funnel's evidence is 1 (no data): the ELBO is -KL(q || p) <= 0.
        flow_elbo, normal_elbo = elbo(funnel, flow), elbo(funnel, normal)
        assert normal_elbo < flow_elbo < 0.05, (family, flow_elbo, normal_elbo)
        assert flow_elbo > normal_elbo + 0.2, (family, flow_elbo, normal_elbo)


@pytest.mark.parametrize("family", ["unconstrained", "constrained"])
def test_auto_monotone_flow_reaches_the_exact_posterior_of_a_conjugate_regression(family):
    # Pyro's usual settings, 2000 steps of ClippedAdam from 1e-2 decaying to 1e-4, one particle:
    # the exact means within 0.2 posterior sd, the sds within 15%, and an ELBO no worse than
    # AutoNormal's (which is exact here, up to its own noise).
    model, mean, sd = regression()
    guide = AutoMonotoneFlow(model, family=family)
    losses = train(model, guide, 2000)
    assert all(math.isfinite(loss) for loss in losses)
    with torch.no_grad():
        draws = guide.get_posterior().sample((4000,)).double()  # unconstrained = constrained
    mean_error = (draws.mean(0) - mean).abs() / sd
    sd_error = (draws.std(0) / sd - 1).abs()
    assert float(mean_error.max()) < 0.2, mean_error
    assert float(sd_error.max()) < 0.15, sd_error
    assert elbo(model, guide) > regression_elbo_of_auto_normal() - 0.1


@functools.cache
def regression_elbo_of_auto_normal(steps: int = 2000, decay: bool = True) -> float:
    model, _, _ = regression()
    normal = AutoNormal(model)
    train(model, normal, steps, decay=decay)
    return elbo(model, normal)


@pytest.mark.parametrize("family", ["unconstrained", "constrained"])
def test_auto_monotone_flow_stays_near_auto_normal_at_a_constant_learning_rate(family):
    # ClippedAdam at a constant 1e-2 with one particle, the setting in which the guide once
    # drifted 18 nats below AutoNormal and then raised on a NaN: the losses stay finite and the
    # ELBO near AutoNormal's under the same settings (the last iterate carries Adam's noise, 0.3
    # to 1.7 nats below AutoNormal's over families and run lengths: a bound of 3 nats).
    model, _, _ = regression()
    guide = AutoMonotoneFlow(model, family=family)
    losses = train(model, guide, 1000, decay=False)
    assert all(math.isfinite(loss) for loss in losses)
    reference = regression_elbo_of_auto_normal(1000, False)
    assert elbo(model, guide) > reference - 3.0


@pytest.mark.parametrize("family", ["unconstrained", "constrained"])
def test_auto_monotone_flow_restores_from_the_param_store(family, tmp_path):
    guide = AutoMonotoneFlow(conjugate, family=family, width=8)
    train(conjugate, guide, 30, lr=3e-2)
    pyro.set_rng_seed(3)
    trained = guide()["z"]
    pyro.get_param_store().save(tmp_path / "params.pt")
    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "params.pt")
    pyro.set_rng_seed(123)  # a fresh guide draws other initial values before it reads the store
    fresh = AutoMonotoneFlow(conjugate, family=family, width=8)
    fresh()  # sets the guide up (runs the model once)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(fresh()["z"], trained, rtol=0, atol=0)
    # The store holds the fresh guide's own tensors: training goes on from there.
    store = pyro.get_param_store()
    for name, parameter in fresh.transform.named_parameters():
        assert store[f"AutoMonotoneFlow.transform$$${name}"] is parameter


def test_auto_monotone_flow_refuses_a_store_of_another_shape():
    guide = AutoMonotoneFlow(conjugate, width=8)
    guide()
    with pytest.raises(ValueError, match=r"param store holds .* of shape .*clear_param_store"):
        AutoMonotoneFlow(conjugate, width=16)()


def test_pyros_auto_normalizing_flow_restores_from_its_state_dict(tmp_path):
    # Pyro's AutoNormalizingFlow does not read its transform back from the param store (nor do
    # Pyro's own flow guides); its state_dict, buffers included, restores it.
    make = partial(unconstrained_monotone_autoregressive, width=8)
    guide = AutoNormalizingFlow(conjugate, make)
    train(conjugate, guide, 30, lr=3e-2)
    pyro.set_rng_seed(3)
    trained = guide()["z"]
    torch.save(guide.state_dict(), tmp_path / "guide.pt")
    pyro.clear_param_store()
    pyro.set_rng_seed(123)
    fresh = AutoNormalizingFlow(conjugate, make)
    fresh()
    fresh.load_state_dict(torch.load(tmp_path / "guide.pt"))
    pyro.set_rng_seed(3)
    torch.testing.assert_close(fresh()["z"], trained, rtol=0, atol=0)


def test_auto_monotone_flow_on_eight_schools():
    normal = AutoNormal(eight_schools)
    train(eight_schools, normal, 500, lr=3e-2)
    guide = AutoMonotoneFlow(eight_schools, width=16)
    losses = train(eight_schools, guide, 500, lr=3e-2)
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50
    # The centered model's funnel between tau and theta: the mean-field guide collapses tau
    # towards 0, the flow does not.
    assert elbo(eight_schools, guide) > elbo(eight_schools, normal) + 1.0
    samples = Predictive(eight_schools, guide=guide, num_samples=2000)()
    assert samples["theta"].shape == (2000, 8) and bool((samples["tau"] > 0).all())
    assert float(samples["tau"].mean()) > 2 * float(
        Predictive(eight_schools, guide=normal, num_samples=2000)()["tau"].mean()
    )
    summary = guide.quantiles([0.25, 0.5, 0.75])
    assert summary["theta"].shape == (3, 8) and summary["mu"].shape == (3,)


def test_median_and_quantiles_of_a_known_posterior():
    guide = AutoMonotoneFlow(conjugate, width=8)
    train(conjugate, guide, 400, lr=3e-2, particles=16)  # the scale shrinks from 1 to 0.7
    levels = [0.05, 0.5, 0.95]
    quantiles = guide.quantiles(levels)["z"]
    assert quantiles.shape == (3, 3)
    assert bool((quantiles[0] < quantiles[1]).all() and (quantiles[1] < quantiles[2]).all())
    # The guide's own samples, drawn independently, have the same quantiles (to the Monte Carlo
    # error of 10^4 and 4 * 10^4 draws).
    with torch.no_grad():
        samples = guide.get_posterior().sample((40000,))
    empirical = torch.quantile(samples, torch.tensor(levels), dim=0)
    torch.testing.assert_close(quantiles, empirical, atol=0.05, rtol=0)
    # And the guide has learned the posterior N(1/2, 1/2) roughly.
    normal = torch.distributions.Normal(0.5, math.sqrt(0.5))
    expected = normal.icdf(torch.tensor(levels)).unsqueeze(-1).expand(3, 3)
    torch.testing.assert_close(quantiles, expected, atol=0.15, rtol=0)
    median = guide.median()
    assert set(median) == {"z"}
    torch.testing.assert_close(median["z"], quantiles[1])
    # Repeatable, and the global random state is left as it was.
    state = torch.get_rng_state()
    torch.testing.assert_close(guide.quantiles(levels)["z"], quantiles)
    assert torch.equal(torch.get_rng_state(), state)


def test_quantiles_are_mapped_to_the_support():
    guide = AutoMonotoneFlow(log_normal, width=8)
    train(log_normal, guide, 400, lr=3e-2, particles=16)  # the flows learn the shape
    levels = torch.tensor([0.1, 0.5, 0.9])
    quantiles = guide.quantiles(levels)["scale"]
    with torch.no_grad():
        latent = guide.get_posterior().sample((40000,)).squeeze(-1)
    torch.testing.assert_close(quantiles, torch.quantile(latent, levels).exp(), rtol=0.05, atol=0)
    assert bool((quantiles > 0).all())
    # The posterior is the LogNormal(0, 1) prior: quantiles exp(+-1.28) and 1, roughly.
    expected = torch.exp(torch.tensor([-1.2816, 0.0, 1.2816]))
    torch.testing.assert_close(quantiles, expected, rtol=0.15, atol=0)


def test_median_before_training_sets_up_the_guide():
    guide = AutoMonotoneFlow(conjugate, width=4)
    median = guide.median()  # the flows start as the identity: the initial location, 0
    # (from 10^4 draws of scale 1: a standard error of 1.25 / 100)
    torch.testing.assert_close(median["z"], torch.zeros(3), atol=0.05, rtol=0)


def test_auto_monotone_flow_is_a_stack_with_permutations():
    guide = AutoMonotoneFlow(funnel, width=4, layers=3)
    guide()
    parts = guide.transform.parts
    kinds = [type(part).__name__ for part in parts]
    assert kinds == [
        "UnconstrainedMonotoneAutoregressive",
        "Permute",
        "UnconstrainedMonotoneAutoregressive",
        "Permute",
        "UnconstrainedMonotoneAutoregressive",
        "_LocationScale",
    ]
    assert torch.equal(parts[0].arn.permutation, torch.arange(10))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"family": "planar"}, r"unknown family 'planar'; allowed values are 'unconstrained'"),
        ({"layers": 0}, r"layers must be an integer >= 1"),
        ({"width": 0}, r"width must be an integer >= 1"),
        ({"num_summary_samples": 0}, r"num_summary_samples must be an integer >= 1"),
        ({"parametrization": "xavier"}, r"unknown parametrization 'xavier'"),
        ({"hidden_dims": [0]}, r"each of hidden_dims must be an integer >= 1"),
    ],
)
def test_auto_monotone_flow_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoMonotoneFlow(conjugate, **kwargs)


def test_quantiles_outside_the_unit_interval():
    guide = AutoMonotoneFlow(conjugate, width=4)
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        guide.quantiles([0.5, 1.5])
