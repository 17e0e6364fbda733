"""Properties of every public transform over random settings (hypothesis): finite values or a
clear ValueError for any finite parameters and inputs, log-det against autograd, the inverse of
the forward map; and the regression tests of what a user's own model and data met first."""

from __future__ import annotations

import copy
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_overparam_flows as pof
from pyro_overparam_flows.maps import MIN_SLOPE
from pyro_overparam_flows.numerics import quadrature_rule
from pyro_overparam_flows.parametrizations import (
    CONSTRAINED_PARAMETRIZATIONS,
    UNCONSTRAINED_PARAMETRIZATIONS,
)

from helpers import perturb_

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
STRUCTURES = ("elementwise", "autoregressive", "coupling")
CONTEXT_DIM = 2


def make(family, structure, conditional, dim, width, options):
    """The public helper for a family, structure and conditional or not."""
    prefix = "conditional_" if conditional else ""
    name = f"{prefix}{family}_monotone" + ("" if structure == "elementwise" else f"_{structure}")
    helper = getattr(pof, name)
    if structure == "elementwise":
        return helper(dim, width, **options)
    hidden = {"hidden_dims": [8]}
    if conditional:
        return helper(dim, CONTEXT_DIM, width, **hidden, **options)
    return helper(dim, width, **hidden, **options)


PERTURBATIONS = st.floats(0.0, 1.0)


@st.composite
def transforms(draw, scales=PERTURBATIONS):
    """A public transform with random settings, perturbed by a random amount (bound to a random
    context if conditional), its dtype and input dimension."""
    family = draw(st.sampled_from(["constrained", "unconstrained"]))
    structure = draw(st.sampled_from(STRUCTURES))
    conditional = structure != "elementwise" and draw(st.booleans())
    dim = draw(st.integers(2 if structure == "coupling" else 1, 4))
    width = draw(st.integers(1, 24))
    if family == "constrained":
        options = {
            "parametrization": draw(st.sampled_from(list(CONSTRAINED_PARAMETRIZATIONS))),
            "activation": draw(st.sampled_from(["tanh", "sigmoid"])),
            "positivity": draw(st.sampled_from(["softplus", "exp", "square", "projected"])),
        }
    else:
        activation = draw(st.sampled_from(["relu", "tanh", "sigmoid", "softplus", "erf"]))
        options = {
            "parametrization": draw(st.sampled_from(list(UNCONSTRAINED_PARAMETRIZATIONS))),
            "activation": activation,
            "phi": draw(st.sampled_from(["elu_plus_one", "softplus"])),
        }
    options["tail"] = draw(st.sampled_from([None, True]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    module = make(family, structure, conditional, dim, width, options)
    perturb_(module, scale=draw(scales), seed=seed).to(dtype)
    context = torch.randn(CONTEXT_DIM, dtype=dtype) if conditional else None
    return module, context, dtype, dim


def bind(module, context):
    return module if context is None else module.condition(context)


def with_fine_quadrature(module):
    """A copy whose integral is exact to rounding for these inputs: Gauss-Legendre, 4096 nodes
    (the map itself otherwise carries the quadrature's error, and its derivative that error's
    derivative)."""
    module = copy.deepcopy(module)
    if getattr(module, "integration", "exact") != "exact":
        nodes, weights = quadrature_rule("gauss-legendre", 4096)
        module.quadrature_nodes = nodes.to(module.quadrature_nodes)
        module.quadrature_weights = weights.to(module.quadrature_weights)
    return module


def inputs(draw, dim, dtype, scale=3.0):
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*batch, dim, generator=generator, dtype=torch.float64).to(dtype)


@SETTINGS
@given(data=st.data())
def test_log_det_equals_autograd_and_the_inverse_undoes_the_forward(data):
    module, context, dtype, dim = data.draw(transforms())
    transform = bind(module, context)
    x = inputs(data.draw, dim, dtype)
    y = transform(x)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    log_det = transform.log_abs_det_jacobian(x, y)
    assert log_det.shape == x.shape[:-1] and bool(torch.isfinite(log_det).all())
    # The log-det is exact: against the Jacobian of the map with its integral exact too.
    reference_map = bind(
        with_fine_quadrature(module).double(), None if context is None else context.double()
    )
    tolerance = 2e-3 if dtype == torch.float32 else 1e-8
    for row, value in zip(x.reshape(-1, dim), log_det.detach().reshape(-1), strict=True):
        jacobian = torch.autograd.functional.jacobian(
            lambda v: reference_map(v.clone()), row.double()
        )
        reference = float(torch.linalg.slogdet(jacobian)[1])
        assert abs(float(value) - reference) <= tolerance * max(1.0, abs(reference))
    if not module.has_tail:
        return  # the paper's bounded models: their own outputs invert, tested elsewhere
    with torch.no_grad():
        x_back = transform.inv(y.clone())
        residual = transform(x_back.clone()) - y
    assert bool(torch.isfinite(x_back).all())
    tolerance = 64 * torch.finfo(dtype).eps
    assert bool((residual.abs() <= tolerance * y.abs().clamp(min=1.0)).all())


@SETTINGS
@given(data=st.data(), magnitude=st.sampled_from([1e2, 1e3, 1e6]), sign=st.sampled_from([1, -1]))
def test_any_finite_parameters_give_finite_values_or_a_value_error_naming_the_cause(
    data, magnitude, sign
):
    # Every parameter set to +-magnitude (Pyro's affine and spline flows stay finite there).
    module, context, dtype, dim = data.draw(transforms(scales=st.just(0.0)))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(sign * magnitude)
    transform = bind(module, context)
    x = inputs(data.draw, dim, dtype)
    causes = ("overflow", "too large", "outside the range", "did not converge", "flat to working")
    try:
        y = transform(x)
        log_det = transform.log_abs_det_jacobian(x, y)
        x_back = transform.inv(y.clone())
    except ValueError as error:
        assert any(cause in str(error) for cause in causes), str(error)
        return
    for value in (y, log_det, x_back):
        assert bool(torch.isfinite(value).all())


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
@pytest.mark.parametrize("structure", ["autoregressive", "coupling"])
def test_a_flow_inverts_its_own_outputs_in_every_row(family, structure, dtype):
    # A float32 autoregressive flow used to fail on up to 2 rows in 8192 after a few
    # perturbations of its weights: with a tail its image is the real line by construction.
    generator = torch.Generator().manual_seed(0)
    for seed in range(3):
        torch.manual_seed(seed)
        transform = make(family, structure, False, 4, 16, {})
        for _ in range(3):
            perturb_(transform, scale=0.5, seed=seed)
        transform = transform.to(dtype)
        x = 3.0 * torch.randn(8192, 4, generator=generator, dtype=torch.float64).to(dtype)
        with torch.no_grad():
            y = transform(x)
            x_back = transform.inv(y.clone())
        assert bool(torch.isfinite(x_back).all())


def test_an_unconstrained_flow_as_a_learned_prior_trains_under_svi():
    # Used forward as a prior, the paper's model (no tail) left its range within 5 SVI steps:
    # the prior's image shrank from R to (-0.59, 0.24), and the guide's sample outside it had no
    # preimage. With the default tail the image stays R.
    flow = pof.unconstrained_monotone(1, width=32)
    data = 2.0 * torch.randn(100) + 1.0

    def model():
        pyro.module("flow", flow)
        base = dist.Normal(torch.zeros(1), torch.ones(1)).to_event(1)
        mu = pyro.sample("mu", dist.TransformedDistribution(base, [flow]))
        with pyro.plate("data", 100):
            pyro.sample("obs", dist.Normal(mu[..., 0], 1.0), obs=data)

    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 2e-2}), Trace_ELBO())
    losses = [svi.step() for _ in range(200)]
    assert all(math.isfinite(loss) for loss in losses)
    # The flow's slope never falls below the tail's.
    grid = torch.linspace(-1e3, 1e3, 101).unsqueeze(-1)
    with torch.no_grad():
        log_slope = flow.log_abs_det_jacobian(grid, flow(grid))
    assert float(log_slope.min()) >= math.log(MIN_SLOPE) - 1e-6


@pytest.mark.parametrize(
    "factory",
    [
        lambda: pof.unconstrained_monotone(2, 8, activation="tanh"),
        lambda: pof.constrained_monotone_autoregressive(2, 8),
        lambda: pof.conditional_unconstrained_monotone_coupling(2, 3, 8),
    ],
    ids=["elementwise", "autoregressive", "conditional"],
)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_is_refused_with_a_clear_error(factory, half):
    module = factory()
    with pytest.raises(ValueError, match=f"converting .* to {half} is not supported"):
        module.to(half)
    assert all(p.dtype == torch.float32 for p in module.parameters())  # left as it was
    transform = module.condition(torch.zeros(3)) if hasattr(module, "condition") else module
    with pytest.raises(ValueError, match=f"x of dtype {half} is not supported.*float32"):
        transform(torch.zeros(4, 2, dtype=half))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(half)
    try:
        with pytest.raises(ValueError, match=f"the default dtype {half} is not supported"):
            factory()
    finally:
        torch.set_default_dtype(previous)


def test_quadrature_nodes_are_derived_not_saved():
    # A float32 checkpoint loaded into a float64 module used to bring float32 nodes (1e-8
    # errors): the rule is not in the state_dict, and is computed in float64 for the module.
    saved = pof.unconstrained_monotone(1, 8, activation="tanh")
    state = saved.state_dict()
    assert not any("quadrature" in key for key in state)
    target = pof.unconstrained_monotone(1, 8, activation="tanh").double()
    target.load_state_dict(state)
    nodes, weights = pof.numerics.quadrature_rule("gauss-legendre", 192)
    assert torch.equal(target.quadrature_nodes, nodes) and torch.equal(
        target.quadrature_weights, weights
    )
    # A checkpoint of version 0.1.0, which saved the rule (in float32), still loads.
    old = {**state, "quadrature_nodes": nodes.float(), "quadrature_weights": weights.float()}
    target.load_state_dict(old)
    assert torch.equal(target.quadrature_nodes, nodes)
