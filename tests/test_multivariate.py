"""Autoregressive, coupling and conditional flows: log-det against autograd, Jacobian structure,
round trips, gradients of the inverse, context broadcasting, composition with Pyro's transforms."""

from __future__ import annotations

import copy

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import Permute, affine_autoregressive, spline_coupling
from pyro.nn import AutoRegressiveNN

from pyro_overparam_flows import (
    ConditionalUnconstrainedMonotoneAutoregressive,
    ConstrainedMonotone,
    ConstrainedMonotoneAutoregressive,
    UnconstrainedMonotoneAutoregressive,
    conditional_constrained_monotone_autoregressive,
    conditional_constrained_monotone_coupling,
    conditional_unconstrained_monotone_autoregressive,
    conditional_unconstrained_monotone_coupling,
    constrained_monotone_autoregressive,
    constrained_monotone_coupling,
    unconstrained_monotone_autoregressive,
    unconstrained_monotone_coupling,
)

from helpers import TOLERANCE, perturb_

CONTEXT_DIM = 3
WIDTH = 6
HIDDEN = [12]

# name -> (factory(input_dim), conditional, autoregressive)
KINDS = {
    "constrained-autoregressive": (
        lambda d: constrained_monotone_autoregressive(d, WIDTH, [max(HIDDEN[0], d)]),
        False,
        True,
    ),
    "unconstrained-autoregressive": (
        lambda d: unconstrained_monotone_autoregressive(d, WIDTH, [max(HIDDEN[0], d)]),
        False,
        True,
    ),
    "unconstrained-autoregressive-quadrature": (
        lambda d: unconstrained_monotone_autoregressive(
            d,
            WIDTH,
            [max(HIDDEN[0], d)],
            activation="tanh",
            phi="softplus",
            quadrature_nodes=64,
        ),
        False,
        True,
    ),
    "constrained-coupling": (
        lambda d: constrained_monotone_coupling(d, WIDTH, hidden_dims=HIDDEN),
        False,
        False,
    ),
    "unconstrained-coupling": (
        lambda d: unconstrained_monotone_coupling(d, WIDTH, hidden_dims=HIDDEN),
        False,
        False,
    ),
    "conditional-constrained-autoregressive": (
        lambda d: conditional_constrained_monotone_autoregressive(
            d, CONTEXT_DIM, WIDTH, [max(HIDDEN[0], d)]
        ),
        True,
        True,
    ),
    "conditional-unconstrained-autoregressive": (
        lambda d: conditional_unconstrained_monotone_autoregressive(
            d, CONTEXT_DIM, WIDTH, [max(HIDDEN[0], d)]
        ),
        True,
        True,
    ),
    "conditional-constrained-coupling": (
        lambda d: conditional_constrained_monotone_coupling(
            d, CONTEXT_DIM, WIDTH, hidden_dims=HIDDEN
        ),
        True,
        False,
    ),
    "conditional-unconstrained-coupling": (
        lambda d: conditional_unconstrained_monotone_coupling(
            d, CONTEXT_DIM, WIDTH, hidden_dims=HIDDEN
        ),
        True,
        False,
    ),
}
BATCHES = [(), (7,), (2, 3)]


def cases():
    for name, (_, _, autoregressive) in KINDS.items():
        for dim in (1, 2, 5) if autoregressive else (2, 5):
            yield name, dim


def build(name: str, dim: int, dtype: torch.dtype, seed: int = 0):
    """A perturbed transform (away from its identity-like initialization) and, for conditional
    ones, a function binding a context."""
    factory, conditional, _ = KINDS[name]
    torch.manual_seed(seed)
    module = perturb_(factory(dim), scale=0.3, seed=seed).to(dtype)
    return module, conditional


def bound(module, conditional: bool, context: torch.Tensor | None):
    return module.condition(context) if conditional else module


def inputs(batch, dim, dtype, conditional, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(*batch, dim, generator=generator, dtype=torch.float64).to(dtype)
    context = None
    if conditional:
        context = torch.randn(*batch, CONTEXT_DIM, generator=generator, dtype=torch.float64)
        context = context.to(dtype)
    return x, context


def jacobians(module, conditional, x, context):
    """The float64 autograd Jacobian of the forward map for each row of x."""
    module = copy.deepcopy(module).double()
    rows = x.double().reshape(-1, x.shape[-1])
    contexts = (
        context.double().reshape(-1, context.shape[-1]) if conditional else [None] * len(rows)
    )
    result = []
    for row, ctx in zip(rows, contexts, strict=True):
        transform = bound(module, conditional, ctx)
        result.append(torch.autograd.functional.jacobian(lambda v, t=transform: t(v.clone()), row))
    return torch.stack(result).reshape(*x.shape, x.shape[-1])


@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("name,dim", list(cases()))
def test_log_det_equals_autograd_and_jacobian_structure(name, dim, batch, dtype):
    module, conditional = build(name, dim, dtype)
    x, context = inputs(batch, dim, dtype, conditional)
    transform = bound(module, conditional, context)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    assert y.shape == x.shape and y.dtype == dtype
    assert log_det.shape == batch and log_det.dtype == dtype
    jacobian = jacobians(module, conditional, x, context)
    reference = torch.linalg.slogdet(jacobian)[1]
    error = (log_det.double() - reference).abs() / reference.abs().clamp(min=1.0)
    assert float(error.detach().max()) < TOLERANCE[dtype]

    autoregressive = KINDS[name][2]
    if autoregressive:
        # Output order[k] depends on inputs order[:k + 1] only: lower triangular once permuted.
        order = module.arn.permutation if not conditional else module.nn.permutation
        permuted = jacobian[..., order, :][..., :, order]
        assert torch.equal(permuted.triu(1), torch.zeros_like(permuted))
    else:
        k = module.split_dim
        eye = torch.eye(k, dtype=torch.float64).expand(*batch, k, k)
        assert torch.equal(jacobian[..., :k, :k], eye)
        assert torch.equal(jacobian[..., :k, k:], torch.zeros_like(jacobian[..., :k, k:]))
        block = jacobian[..., k:, k:]
        assert torch.equal(block, torch.diag_embed(block.diagonal(dim1=-2, dim2=-1)))
    assert bool((jacobian.diagonal(dim1=-2, dim2=-1) > 0).all())


@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("name,dim", list(cases()))
def test_inverse_round_trip(name, dim, batch, dtype):
    module, conditional = build(name, dim, dtype)
    x, context = inputs(batch, dim, dtype, conditional)
    transform = bound(module, conditional, context)
    tolerance = TOLERANCE[dtype]
    with torch.no_grad():
        y = transform(x)
        x_back = transform.inv(y.clone())
        residual = transform(x_back.clone()) - y
    assert x_back.shape == x.shape
    # Backward error: the solution maps back onto y to working precision.
    assert bool((residual.abs() <= tolerance * y.abs().clamp(min=1.0)).all())
    # Forward error: within the backward error times the conditioning |J^-1| (a coordinate
    # with a small slope amplifies it, and feeds it to the dimensions after it).
    inverse_jacobian = torch.linalg.inv(jacobians(module, conditional, x, context)).abs()
    bound_x = tolerance * (
        x.abs().clamp(min=1.0).double()
        + (inverse_jacobian @ y.abs().clamp(min=1.0).double().unsqueeze(-1)).squeeze(-1)
    )
    assert bool(((x_back - x).abs().double() <= bound_x).all())
    if (
        "relu" in name
        or name.endswith("unconstrained-autoregressive")
        or ("unconstrained-coupling" in name)
    ):
        return  # a ReLU integrand may decay to -inf: the image can be a half-line
    with torch.no_grad():
        y_back = transform(transform.inv(x.clone()).clone())
    assert bool(((y_back - x).abs() <= tolerance * x.abs().clamp(min=1.0)).all())


@pytest.mark.parametrize("name,dim", [case for case in cases() if case[1] > 1])
def test_inverse_gradient_is_the_implicit_function_theorem(name, dim):
    # d x / d y of the inverse is the inverse of the forward Jacobian, off-diagonal terms too.
    module, conditional = build(name, dim, torch.float64)
    x, context = inputs((), dim, torch.float64, conditional)
    transform = bound(module, conditional, context)
    y = transform(x).detach()
    inverse_jacobian = torch.autograd.functional.jacobian(lambda v: transform.inv(v.clone()), y)
    forward_jacobian = torch.autograd.functional.jacobian(lambda v: transform(v.clone()), x)
    torch.testing.assert_close(
        inverse_jacobian, torch.linalg.inv(forward_jacobian), rtol=1e-8, atol=1e-10
    )
    # d x / d theta along a random direction of every parameter: central differences.
    parameters = [p for p in module.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in parameters]

    def total() -> torch.Tensor:
        return bound(module, conditional, context).inv(y.clone()).sum()

    gradients = torch.autograd.grad(total(), parameters)
    analytic = sum(float((g * v).sum()) for g, v in zip(gradients, direction, strict=True))
    step = 1e-6
    with torch.no_grad():
        for p, v in zip(parameters, direction, strict=True):
            p.add_(step * v)
        upper = total()
        for p, v in zip(parameters, direction, strict=True):
            p.sub_(2 * step * v)
        lower = total()
        for p, v in zip(parameters, direction, strict=True):
            p.add_(step * v)
    assert abs(analytic) > 1e-3  # the direction moves the inverse
    assert analytic == pytest.approx(float((upper - lower) / (2 * step)), rel=1e-5)


def test_inverse_carries_the_gradient_to_a_context_of_frozen_flows():
    module = perturb_(conditional_unconstrained_monotone_autoregressive(3, CONTEXT_DIM, 4, [12]))
    module = module.double().requires_grad_(False)
    context = torch.randn(CONTEXT_DIM, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64)
    x = module.condition(context).inv(y)
    assert x.requires_grad
    (gradient,) = torch.autograd.grad(x.sum(), context)
    step = 1e-6
    with torch.no_grad():
        numeric = torch.stack(
            [
                (
                    module.condition(context + step * e).inv(y.clone()).sum()
                    - module.condition(context - step * e).inv(y.clone()).sum()
                )
                / (2 * step)
                for e in torch.eye(CONTEXT_DIM, dtype=torch.float64)
            ]
        )
    torch.testing.assert_close(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_unconstrained_flows_start_as_the_identity():
    x = torch.randn(4, 5, dtype=torch.float64)
    context = torch.randn(4, CONTEXT_DIM, dtype=torch.float64)
    for name, (factory, conditional, _) in KINDS.items():
        if "unconstrained" not in name:
            continue
        transform = bound(factory(5).double(), conditional, context)
        torch.testing.assert_close(transform(x), x, rtol=0, atol=1e-12, msg=name)
        torch.testing.assert_close(
            transform.log_abs_det_jacobian(x, x), torch.zeros(4, dtype=torch.float64)
        )


def test_constrained_autoregressive_starts_as_the_element_wise_flow():
    transform = constrained_monotone_autoregressive(3, 8).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    net, log_scale = transform._condition_on(x)
    assert torch.equal(log_scale, torch.zeros_like(log_scale))
    for field in ("hidden_bias", "offset", "tail"):
        values = getattr(net, field)
        assert torch.equal(values, values[:1].expand_as(values)), field  # independent of x
    # The element-wise flow with the same weights and the conditioner's biases maps alike.
    element_wise = ConstrainedMonotone(3, 8).double()
    with torch.no_grad():
        element_wise.raw_hidden_weight.copy_(transform.raw_hidden_weight)
        element_wise.raw_output_weight.copy_(transform.raw_output_weight)
        element_wise.hidden_bias.copy_(net.hidden_bias[0])
    torch.testing.assert_close(transform(x), element_wise(x), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(net.tail[0], element_wise.tail)  # the same initial tail, 0.5
    assert net.offset[0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "batch,context_batch,expected",
    [((7,), (), (7,)), ((), (7,), (7,)), ((2, 1), (3,), (2, 3)), ((4, 1), (1, 5), (4, 5))],
    ids=str,
)
@pytest.mark.parametrize("name", [n for n, kind in KINDS.items() if kind[1]])
def test_condition_broadcasts_context_against_batch(name, batch, context_batch, expected):
    module, _ = build(name, 4, torch.float64)
    x = torch.randn(*batch, 4, dtype=torch.float64)
    context = torch.randn(*context_batch, CONTEXT_DIM, dtype=torch.float64)
    transform = module.condition(context)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    assert y.shape == (*expected, 4) and log_det.shape == expected
    # Each row equals the transform conditioned on that row's context alone.
    xs = x.expand(*expected, 4).reshape(-1, 4)
    contexts = context.expand(*expected, CONTEXT_DIM).reshape(-1, CONTEXT_DIM)
    for i, (row, ctx) in enumerate(zip(xs, contexts, strict=True)):
        single = module.condition(ctx)
        torch.testing.assert_close(y.reshape(-1, 4)[i], single(row))
        torch.testing.assert_close(log_det.reshape(-1)[i], single.log_abs_det_jacobian(row, None))
    with torch.no_grad():
        x_back = transform.inv(y.clone())
    torch.testing.assert_close(x_back, x.expand_as(x_back), rtol=1e-10, atol=1e-10)


def test_conditional_flow_in_a_conditional_transformed_distribution():
    module = conditional_unconstrained_monotone_autoregressive(3, CONTEXT_DIM, 8)
    perturb_(module)
    base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    flow = dist.ConditionalTransformedDistribution(base, [module])
    context = torch.randn(5, CONTEXT_DIM)
    conditioned = flow.condition(context)
    sample = conditioned.sample()
    assert sample.shape == (5, 3)
    score = conditioned.log_prob(sample)
    rescored = flow.condition(context).log_prob(sample.clone())  # through the inverse
    torch.testing.assert_close(score, rescored, rtol=1e-4, atol=1e-4)


def test_composition_with_pyros_transforms(dtype):
    torch.manual_seed(0)
    dim = 4
    # Mild perturbations: a chain of six steep random maps is ill-conditioned in float32, and
    # scores through the inverses would differ from the cached ones by that, not by a bug.
    transforms = [
        perturb_(unconstrained_monotone_autoregressive(dim, 8), scale=0.1),
        Permute(torch.tensor([3, 1, 0, 2])),
        affine_autoregressive(dim, [16]),
        perturb_(constrained_monotone_coupling(dim, 8), scale=0.1),
        spline_coupling(dim),
        perturb_(constrained_monotone_autoregressive(dim, 8), scale=0.1),
    ]
    transforms = [t.to(dtype) if isinstance(t, torch.nn.Module) else t for t in transforms]
    base = dist.Normal(torch.zeros(dim, dtype=dtype), torch.ones(dim, dtype=dtype)).to_event(1)
    flow = dist.TransformedDistribution(base, transforms)
    sample = flow.rsample((50,))
    assert sample.shape == (50, dim) and sample.dtype == dtype
    score = flow.log_prob(sample)  # from the cache of the sampling pass
    # Through every inverse. Pyro's AffineAutoregressive inverse allocates in the default dtype.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        rescored = flow.log_prob(sample.detach().clone())
    finally:
        torch.set_default_dtype(default)
    assert bool(torch.isfinite(score).all())
    torch.testing.assert_close(
        score.detach(),
        rescored,
        rtol=1e-3 if dtype == torch.float32 else 1e-8,
        atol=1e-3 if dtype == torch.float32 else 1e-8,
    )
    score.mean().backward()
    assert all(
        p.grad is not None and bool(torch.isfinite(p.grad).all())
        for t in transforms
        if isinstance(t, torch.nn.Module)
        for p in t.parameters()
        if p.requires_grad
    )


def test_log_det_reuses_the_forward_network_and_tracks_parameter_changes():
    transform = perturb_(unconstrained_monotone_autoregressive(3, 8)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = transform(x)
    calls = []
    handle = transform.arn.register_forward_hook(lambda *args: calls.append(1))
    first = transform.log_abs_det_jacobian(x, y)
    assert calls == []  # the network of the forward call was reused
    with torch.no_grad():
        transform.hidden_weight.mul_(1.5)  # an optimizer step, in place
    second = transform.log_abs_det_jacobian(x, y)
    assert calls == [1]
    fresh = copy.deepcopy(transform)
    torch.testing.assert_close(second, fresh.log_abs_det_jacobian(x.clone(), None))
    assert not torch.allclose(first, second)
    handle.remove()


def test_projected_positivity_in_an_autoregressive_flow():
    transform = constrained_monotone_autoregressive(2, 4, positivity="projected")
    with torch.no_grad():
        transform.raw_hidden_weight.sub_(10.0)
    transform.project_()
    assert float(transform.raw_hidden_weight.detach().min()) == pytest.approx(1e-6)


def test_pickle_and_parameters_of_a_used_flow():
    import pickle

    transform = unconstrained_monotone_coupling(4, 8)
    x = torch.randn(3, 4)
    transform.log_abs_det_jacobian(x, transform(x))
    restored = pickle.loads(pickle.dumps(transform))
    torch.testing.assert_close(restored(x), transform(x))
    names = {name for name, _ in transform.named_parameters()}
    assert {"hidden_weight", "output_weight"} <= names
    assert any(name.startswith("nn.") for name in names)


def test_classes_take_user_built_networks():
    arn = AutoRegressiveNN(3, [30], param_dims=[6], permutation=torch.tensor([2, 0, 1]))
    transform = perturb_(UnconstrainedMonotoneAutoregressive(3, arn, 4)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    jacobian = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: transform(v.clone()), row) for row in x]
    )
    # The order is 2, 0, 1: output 2 depends on x_2 only, output 0 on x_2 and x_0.
    depends = (jacobian != 0).any(0)
    expected = torch.tensor([[True, False, True], [True, True, True], [False, False, True]])
    assert torch.equal(depends, expected)


def test_declared_properties():
    from pyro.distributions import constraints
    from pyro.nn import ConditionalAutoRegressiveNN

    plain = ConstrainedMonotoneAutoregressive(3, AutoRegressiveNN(3, [10], param_dims=[7]), 4)
    conditional = ConditionalUnconstrainedMonotoneAutoregressive(
        2, ConditionalAutoRegressiveNN(2, 1, [4], param_dims=[6]), 4
    )
    conditioned = conditional.condition(torch.zeros(1))
    coupling = unconstrained_monotone_coupling(4, 4)
    for transform, autoregressive in ((plain, True), (conditioned, True), (coupling, False)):
        assert transform.bijective and transform.sign == 1
        assert transform.autoregressive is autoregressive
        assert transform.domain is constraints.real_vector
        assert transform.codomain is constraints.real_vector
    # The conditioned transform shares the conditional module's parameters.
    assert {id(p) for p in conditional.parameters()} == {id(p) for p in conditioned.parameters()}


@pytest.mark.parametrize("name", list(KINDS))
def test_on_device_matches_cpu(name, device):
    module, conditional = build(name, 3, torch.float64)
    x, context = inputs((4,), 3, torch.float64, conditional)
    reference = bound(module, conditional, context)
    with torch.no_grad():
        expected_y = reference(x)
        expected_log_det = reference.log_abs_det_jacobian(x, expected_y)
    moved = copy.deepcopy(module).to(device)
    transform = bound(moved, conditional, None if context is None else context.to(device))
    with torch.no_grad():
        y = transform(x.to(device))
        log_det = transform.log_abs_det_jacobian(x.to(device), y)
        x_back = transform.inv(y.clone())
    assert y.device.type == device.type and x_back.device.type == device.type
    torch.testing.assert_close(y.cpu(), expected_y)
    torch.testing.assert_close(log_det.cpu(), expected_log_det)
    torch.testing.assert_close(x_back.cpu(), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "make", [constrained_monotone_autoregressive, unconstrained_monotone_autoregressive]
)
def test_map_given_evaluates_each_dimension_at_t_with_the_conditioner_fed_x(make, dtype):
    transform = perturb_(make(3, width=8).to(dtype))
    x = torch.randn(5, 3, dtype=dtype)
    t = torch.randn(3, dtype=dtype)
    got = transform.map_given(x, t)
    for d in range(3):
        moved = x.clone()
        moved[:, d] = t[d]  # the map of d depends on x_d and the coordinates before it only
        torch.testing.assert_close(got[:, d], transform(moved)[:, d])
    torch.testing.assert_close(transform.map_given(x, x), transform(x))
    with pytest.raises(ValueError, match="t must have shape"):
        transform.map_given(x, torch.zeros(2, dtype=dtype))
    with pytest.raises(ValueError, match="does not broadcast"):
        transform.map_given(x, torch.zeros(2, 1, 3, dtype=dtype))


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_linear_conditioner_against_a_masked_linear_map(batch, dtype, device):
    """LinearAutoregressiveNN's output and its gradients to weight, bias and input against the
    masked affine map written out per output: number p of dimension d is
    sum_j mask[d P + p, j] W[d P + p, j] x_j + b[d P + p]."""
    from pyro_overparam_flows.transforms.conditioners import LinearAutoregressiveNN

    torch.manual_seed(1)
    network = LinearAutoregressiveNN(3, [4], permutation=torch.tensor([1, 2, 0]))
    network = network.to(device=device, dtype=dtype)
    with torch.no_grad():
        network.weight.normal_()  # entries the mask hides as well: they must not count
    x = torch.randn(*batch, 3, device=device, dtype=dtype, requires_grad=True)
    out = network(x)
    assert out.shape == (*batch, 3, 4) and out.dtype == dtype and out.device == x.device
    masked = network.weight * network.mask
    expected = (x.unsqueeze(-2) * masked).sum(-1) + network.bias
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {}
    assert torch.allclose(out, expected.unflatten(-1, (3, 4)), **tolerance)
    # Dimension 1 comes first: its numbers are constants; dimension 0 comes last.
    assert torch.equal(network.mask.view(3, 4, 3)[1], torch.zeros_like(network.mask[:4]))
    outward = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, network.weight, network.bias), outward)
    wanted = torch.autograd.grad(expected, (x, network.weight, network.bias), outward.flatten(-2))
    for a, b in zip(got, wanted, strict=True):
        assert torch.allclose(a, b, **tolerance)
    assert torch.equal(got[1] * (1 - network.mask), torch.zeros_like(got[1]))  # hidden: no gradient
