"""A family written once, here, against the documented contract, works in every structure: an
affine family f(x) = e^s x + t per dimension (s a weight, t a free number) element-wise,
autoregressive, coupling, conditional, inside Pyro's AutoNormalizingFlow and AutoMonotoneFlow,
and passes the checks the real families pass: log-det against autograd, round trips, float64
gradcheck of the forward map and the inverse."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow
from pyro.nn import ConditionalAutoRegressiveNN, ConditionalDenseNN

from pyro_overparam_flows.guides import AutoMonotoneFlow
from pyro_overparam_flows.numerics import native
from pyro_overparam_flows.training import fit_density
from pyro_overparam_flows.transforms import (
    ConditionalMonotoneAutoregressive,
    ConditionalMonotoneCoupling,
    Family,
    MonotoneTransformModule,
    monotone_autoregressive,
    monotone_coupling,
)
from pyro_overparam_flows.transforms.family import Weight, select_fields

from helpers import perturb_


class AffineNetwork(NamedTuple):
    log_slope: torch.Tensor  # (..., dim)
    offset: torch.Tensor  # (..., dim)


class Affine(Family):
    """f(x) = e^s x + t: s a weight of the transform, t the one free number per dimension."""

    name = "affine"
    exposed = ("initial_log_slope",)

    def __init__(self, initial_log_slope: float = 0.0):
        self.initial_log_slope = initial_log_slope

    def free_fields(self):
        return (("offset", None),)

    def initial_weights(self, dim):
        log_slope = torch.full((dim,), self.initial_log_slope)
        return {"log_slope": Weight(log_slope)}, {"offset": torch.zeros(dim)}

    def network(self, tensors, free):
        return AffineNetwork(tensors["log_slope"], free["offset"])

    def map(self, x, net):
        return net.offset + torch.exp(net.log_slope) * x

    def log_derivative(self, x, net):
        return net.log_slope.expand(torch.broadcast_shapes(x.shape, net.log_slope.shape))

    def solve(self, y, net, log_scale=None, columns=None):
        target = y if log_scale is None else net.offset + (y - net.offset) * torch.exp(-log_scale)
        return (target - net.offset) * torch.exp(-net.log_slope)

    def select(self, net, index):
        return select_fields(net, index, unit_fields=())


DIM, CONTEXT = 3, 2
DATA = Path(__file__).resolve().parent / "data"


def elementwise():
    return MonotoneTransformModule(DIM, Affine(0.3))


def autoregressive():
    return monotone_autoregressive(DIM, Affine(), hidden_dims=[8])


def coupling():
    return monotone_coupling(DIM, Affine(), hidden_dims=[8])


def conditional_autoregressive():
    size = Affine().free_size + 1  # the offset and the log-scale
    network = ConditionalAutoRegressiveNN(DIM, CONTEXT, [8], param_dims=[size])
    return ConditionalMonotoneAutoregressive(DIM, Affine(), network)


def conditional_coupling():
    size = (Affine().free_size + 1) * (DIM - 1)
    network = ConditionalDenseNN(1, CONTEXT, [8], param_dims=[size])
    return ConditionalMonotoneCoupling(DIM, Affine(), 1, network)


STRUCTURES = {
    "elementwise": elementwise,
    "autoregressive": autoregressive,
    "coupling": coupling,
    "conditional autoregressive": conditional_autoregressive,
    "conditional coupling": conditional_coupling,
}


def built(name: str, dtype: torch.dtype = torch.float64):
    """The structure ``name`` of the affine family, perturbed away from its start, in
    ``dtype``; for conditional structures the transform of a fixed context."""
    torch.manual_seed(0)
    module = perturb_(STRUCTURES[name]()).to(dtype)
    if name.startswith("conditional"):
        context = torch.randn(CONTEXT, generator=torch.Generator().manual_seed(3), dtype=dtype)
        return module, module.condition(context)
    return module, module


@pytest.mark.parametrize("name", STRUCTURES)
def test_the_family_is_exposed_and_its_weights_are_the_transforms(name):
    module, transform = built(name)
    assert isinstance(transform.family, Affine)
    assert "log_slope" in dict(module.named_parameters())
    assert transform.initial_log_slope == transform.family.initial_log_slope
    assert "log_slope" in module.state_dict()


@pytest.mark.parametrize("name", STRUCTURES)
def test_log_det_equals_the_autograd_jacobian(name):
    _, transform = built(name)
    x = torch.randn(4, DIM, dtype=torch.float64)
    log_det = transform.log_abs_det_jacobian(x, transform(x))
    for row in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda v: transform(v), x[row])
        torch.testing.assert_close(log_det[row], torch.linalg.slogdet(jacobian)[1])


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_inverse_undoes_the_forward(name, dtype):
    _, transform = built(name, dtype)
    x = torch.randn(64, DIM, dtype=dtype)
    y = transform(x)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(transform.inv(y.clone()), x, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(transform(transform.inv(y.clone())), y, atol=tolerance, rtol=0)


@pytest.mark.parametrize("name", STRUCTURES)
def test_gradcheck_of_the_forward_map_and_the_inverse(name):
    _, transform = built(name)
    x = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: transform(v), (x,))
    assert torch.autograd.gradcheck(lambda v: transform.inv(v), (x,))


@pytest.mark.parametrize("name", STRUCTURES)
def test_the_inverse_is_differentiable_in_the_family_weights(name):
    module, transform = built(name)
    y = torch.randn(5, DIM, dtype=torch.float64)
    log_slope = dict(module.named_parameters())["log_slope"]
    (grad,) = torch.autograd.grad(transform.inv(y.clone()).sum(), log_slope)
    numeric, step = torch.zeros_like(log_slope), 1e-6
    for index in range(len(log_slope)):  # central differences, one weight at a time
        for sign in (1.0, -1.0):
            with torch.no_grad():
                log_slope[index] += sign * step
                numeric[index] += sign * transform.inv(y.clone()).sum() / (2 * step)
                log_slope[index] -= sign * step
    torch.testing.assert_close(grad, numeric, atol=1e-6, rtol=1e-6)


def test_the_affine_family_in_pyros_auto_normalizing_flow():
    def model():
        loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    guide = AutoNormalizingFlow(
        model, partial(monotone_autoregressive, family=Affine(), hidden_dims=[8])
    )
    steps = 400
    optimizer = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / steps)})
    svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=4))
    for _ in range(steps):
        svi.step()
    draws = guide.get_posterior().sample((4000,))
    # an affine flow can represent this Gaussian exactly
    torch.testing.assert_close(draws.mean(0), torch.tensor([1.0, -2.0]), atol=0.15, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([0.5, 2.0]), atol=0.0, rtol=0.1)


def test_the_affine_family_in_auto_monotone_flow_restores_from_the_param_store():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1))

    guide = AutoMonotoneFlow(model, family=Affine, layers=2, hidden_dims=[8])
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(20):
        svi.step()
    layers = [part for part in guide.transform.parts if hasattr(part, "family")]
    assert [type(layer.family) for layer in layers] == [Affine, Affine]
    pyro.set_rng_seed(1)
    before = guide.get_posterior().sample((5,))
    restored = AutoMonotoneFlow(model, family=Affine, layers=2, hidden_dims=[8])
    restored()
    pyro.set_rng_seed(1)
    torch.testing.assert_close(restored.get_posterior().sample((5,)), before)


def test_a_family_factory_must_return_a_family():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))

    with pytest.raises(ValueError, match="family must return a Family, got str"):
        AutoMonotoneFlow(model, family=lambda: "affine")


def test_projected_constrained_autoregressive_flows_are_projected_by_fit_density():
    from pyro_overparam_flows import constrained_monotone_autoregressive

    torch.manual_seed(0)
    transform = constrained_monotone_autoregressive(2, 4, hidden_dims=[8], positivity="projected")
    data = torch.randn(64, 2)
    fit_density(transform, data, steps=30, learning_rate=0.5, progress=False)
    floor = transform.raw_hidden_weight.new_tensor(transform.projection_floor)
    assert bool((transform.raw_hidden_weight.detach() >= floor).all())
    assert bool((transform.raw_output_weight.detach() >= floor).all())


def test_pickles_of_version_0_1_load_and_give_the_same_maps():
    # tests/data/transforms_v0_1.pt: transforms pickled by version 0.1 (families as mixins),
    # with their outputs then (written by tests/data/make_transforms_v0_1.py).
    # Equal to a few units in the last place of float32: the PyTorch code rounds differently
    # on another CPU (vector width), and the native kernels compute in double.
    saved = torch.load(DATA / "transforms_v0_1.pt", weights_only=False)
    for name, module in saved["modules"].items():
        assert module.family.name in ("constrained", "unconstrained"), name
        transform = module.condition(saved["context"]) if name.startswith("conditional") else module
        x = saved["x"][:, : module.input_dim]
        for kernels in (False, True):
            previous = native.use_native(kernels)
            try:
                y = transform(x)
            finally:
                native.use_native(previous)
            torch.testing.assert_close(y, saved["outputs"][name], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(transform.inv(y.clone()), x, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(transform.log_abs_det_jacobian(x, y)).all()


def test_parameters_keep_the_order_and_names_of_version_0_1():
    # Optimizer states are matched by position and the param store by name.
    from pyro_overparam_flows import (
        conditional_unconstrained_monotone_autoregressive,
        constrained_monotone,
        unconstrained_monotone,
    )

    def names(module):
        return [name for name, _ in module.named_parameters()]

    assert names(constrained_monotone(2, 4)) == [
        "raw_hidden_weight",
        "raw_output_weight",
        "hidden_bias",
        "raw_tail",
        "offset",
    ]
    assert names(constrained_monotone(2, 4, tail=False)) == [
        "raw_hidden_weight",
        "raw_output_weight",
        "hidden_bias",
        "offset",
    ]
    assert names(unconstrained_monotone(2, 4)) == [
        "hidden_weight",
        "output_weight",
        "hidden_bias",
        "offset",
    ]
    conditional = conditional_unconstrained_monotone_autoregressive(3, 2, 4, hidden_dims=[6])
    bound = names(conditional.condition(torch.zeros(2)))
    assert bound[0].startswith("arn.network.") and bound[-2:] == [
        "parent.hidden_weight",
        "parent.output_weight",
    ]


def test_a_family_argument_that_is_not_a_family_gets_a_clear_error():
    from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily

    with pytest.raises(ValueError, match="got the class UnconstrainedFamily"):
        monotone_autoregressive(3, UnconstrainedFamily)
    with pytest.raises(ValueError, match="family must be a Family instance .* got str"):
        monotone_coupling(4, "unconstrained")

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))

    with pytest.raises(ValueError, match="a callable that returns a new Family for each layer"):
        AutoMonotoneFlow(model, family=Affine())
    with pytest.raises(
        ValueError, match=r"the options are scale and init_conditioner; got \['bogus'\]"
    ):
        AutoMonotoneFlow(model, family=Affine, bogus=3)
    guide = AutoMonotoneFlow(model, family=Affine, scale=False, hidden_dims=[8])
    guide()
    assert all(not part.scale for part in guide.transform.parts if hasattr(part, "family"))
