"""The two transforms: log-det against autograd Jacobians, round trips, gradients, caching."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from scipy import integrate

from pyro_overparam_flows import (
    ConstrainedMonotone,
    UnconstrainedMonotone,
    constrained_monotone,
    unconstrained_monotone,
)
from pyro_overparam_flows.activations import HIDDEN, POSITIVE
from pyro_overparam_flows.maps import MIN_SLOPE, constrained_range

from helpers import TOLERANCE, network_integrand, perturb_, random_network, spread

CONSTRAINED = {
    f"constrained-{activation}-{positivity}-{'tail' if tail else 'bounded'}": (
        lambda d, m, a=activation, p=positivity, t=tail: ConstrainedMonotone(
            d, m, activation=a, positivity=p, tail=t
        )
    )
    for activation, positivity, tail in itertools.product(
        ("tanh", "sigmoid"), ("softplus", "exp", "square", "projected"), (True, False)
    )
}
# Unconstrained flows whose forward map is exact (ReLU) or spectrally accurate (softplus phi
# with enough nodes): the autograd Jacobian of the forward map must equal the exact log-det.
UNCONSTRAINED_ACCURATE = {
    "unconstrained-relu-exact": lambda d, m: UnconstrainedMonotone(d, m),
    **{
        f"unconstrained-{activation}-softplus-{rule}": (
            lambda d, m, a=activation, r=rule: UnconstrainedMonotone(
                d, m, activation=a, phi="softplus", integration=r, quadrature_nodes=128
            )
        )
        for activation, rule in (
            ("tanh", "gauss-legendre"),
            ("sigmoid", "clenshaw-curtis"),
            ("softplus", "gauss-legendre"),
            ("erf", "clenshaw-curtis"),
        )
    },
}
# ELU + 1 has a jump in phi'' where N = 0: quadrature converges like K^-3 and the derivative of
# the discretized integral like K^-2, with a constant that grows with N's slope where it
# crosses 0 and an erratic dependence on where the crossing falls between nodes (K = 2048 is not
# uniformly better than 1024): checked with many nodes and a bound of 5e-5, above the 1.8e-5 seen
# on perturbed width-256 networks and far below the O(1) error of a wrong log-det.
UNCONSTRAINED_ELU_QUADRATURE = {
    f"unconstrained-{activation}-elu-{rule}": (
        lambda d, m, a=activation, r=rule: UnconstrainedMonotone(
            d, m, activation=a, integration=r, quadrature_nodes=1024
        )
    )
    for activation, rule in (("tanh", "gauss-legendre"), ("erf", "clenshaw-curtis"))
}
SHAPES = [((), 1), ((), 3), ((5,), 1), ((5,), 3), ((4, 3), 1), ((4, 3), 3)]


def autograd_log_det(transform: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log |det J| of each row, from the full autograd Jacobian of the float64 forward map."""
    transform = copy.deepcopy(transform).double()
    rows = x.double().reshape(-1, x.shape[-1])
    result = []
    for row in rows:
        jacobian = torch.autograd.functional.jacobian(lambda v: transform(v.clone()), row)
        result.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(result).reshape(x.shape[:-1])


def check_log_det(factory, width, batch, dim, dtype, tolerance):
    transform = perturb_(factory(dim, width)).to(dtype)
    # |x| of order 1: far out the reference itself loses digits (autograd's tanh' = 1 - tanh^2
    # cancels); the far tails are checked against float64 by the underflow test below.
    x = torch.randn(*batch, dim, dtype=dtype)
    log_det = transform.log_abs_det_jacobian(x, transform(x))
    assert log_det.shape == batch and log_det.dtype == dtype
    reference = autograd_log_det(transform, x)
    error = (log_det.double() - reference).abs() / reference.abs().clamp(min=1.0)
    assert float(error.detach().max()) < max(tolerance, TOLERANCE[dtype])


@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("width", [1, 7, 256])
@pytest.mark.parametrize("name", list(CONSTRAINED) + list(UNCONSTRAINED_ACCURATE))
def test_log_det_equals_autograd_jacobian(name, width, batch, dim, dtype):
    factory = {**CONSTRAINED, **UNCONSTRAINED_ACCURATE}[name]
    check_log_det(factory, width, batch, dim, dtype, 1e-10)


@pytest.mark.parametrize("batch,dim", [((5,), 3)])
@pytest.mark.parametrize("width", [1, 7, 256])
@pytest.mark.parametrize("name", list(UNCONSTRAINED_ELU_QUADRATURE))
def test_log_det_equals_autograd_jacobian_elu_quadrature(name, width, batch, dim, dtype):
    check_log_det(UNCONSTRAINED_ELU_QUADRATURE[name], width, batch, dim, dtype, 5e-5)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_log_det_is_finite_where_sigma_derivative_underflows(activation):
    # sigma'(w x + b) underflows in float32 at |x| = 1e4; the log-derivative must not.
    for tail in (True, False):
        transform = perturb_(ConstrainedMonotone(2, 16, activation=activation, tail=tail))
        x = torch.tensor([[1e4, -1e4], [3e3, -5e3]])
        log_det = transform.log_abs_det_jacobian(x, transform(x))
        assert bool(torch.isfinite(log_det).all())
        reference = copy.deepcopy(transform).double().log_abs_det_jacobian(x.double(), None)
        torch.testing.assert_close(log_det.double(), reference, rtol=1e-5, atol=1e-3)


def inverse_of(transform, y):
    return transform.inv(y.clone())  # a new tensor: Pyro's cache must not answer


def assert_round_trips(transform, x, dtype):
    tolerance = TOLERANCE[dtype]
    with torch.no_grad():
        y = transform(x)
        x_back = inverse_of(transform, y)
        y_back = transform(inverse_of(transform, x).clone())
    assert float(((x_back - x).abs() / x.abs().clamp(min=1.0)).max()) < tolerance
    assert float(((y_back - x).abs() / x.abs().clamp(min=1.0)).max()) < tolerance


@pytest.mark.parametrize("width", [1, 7, 256])
@pytest.mark.parametrize(
    "name", [n for n in CONSTRAINED if n.endswith("tail")], ids=lambda n: n.removeprefix("c")
)
def test_constrained_round_trip_over_the_real_line(name, width, dtype, device):
    transform = perturb_(CONSTRAINED[name](2, width)).to(device=device, dtype=dtype)
    x = spread(dtype, device).unsqueeze(-1).expand(-1, 2).contiguous()
    assert_round_trips(transform, x, dtype)


@pytest.mark.parametrize("width", [1, 7, 256])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_bounded_constrained_round_trip_inside_its_range(activation, width, dtype, device):
    transform = ConstrainedMonotone(2, width, activation=activation, tail=False)
    transform = perturb_(transform).to(device=device, dtype=dtype)
    low, high = constrained_range(transform.network(), transform.activation)
    fraction = torch.linspace(0.01, 0.99, 41, dtype=dtype, device=device).unsqueeze(-1)
    with torch.no_grad():
        y = (low + fraction * (high - low)).detach()
        y_back = transform(inverse_of(transform, y).clone())
        x = torch.linspace(-3, 3, 41, dtype=dtype, device=device).unsqueeze(-1).expand(-1, 2)
        x_back = inverse_of(transform, transform(x))
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(y_back, y, rtol=tolerance, atol=tolerance)
    # f' is small where sigma saturates: scale the x tolerance by the conditioning 1 / f'.
    slope = torch.exp(transform.family.log_derivative(x, transform.network())).detach()
    scale = torch.clamp(1 / slope, min=1.0)
    assert bool(((x_back - x).abs() <= 4 * tolerance * scale * (1 + y.abs().max())).all())


@pytest.mark.parametrize("width", [1, 7, 256])
def test_exact_unconstrained_round_trip_over_the_real_line(width, dtype, device):
    # a >= 0 keeps N >= 0, so f' >= 1 everywhere and the inverse is well conditioned at +-1e4.
    transform = perturb_(UnconstrainedMonotone(2, width))
    with torch.no_grad():
        transform.output_weight.abs_()
    transform = transform.to(device=device, dtype=dtype)
    x = spread(dtype, device).unsqueeze(-1).expand(-1, 2).contiguous()
    assert_round_trips(transform, x, dtype)


@pytest.mark.parametrize("width", [1, 7, 64])
@pytest.mark.parametrize(
    "activation,phi,rule",
    [
        ("tanh", "elu_plus_one", "gauss-legendre"),
        ("sigmoid", "softplus", "clenshaw-curtis"),
        ("erf", "elu_plus_one", "clenshaw-curtis"),
    ],
)
def test_quadrature_unconstrained_round_trip(activation, phi, rule, width, dtype, device):
    transform = UnconstrainedMonotone(2, width, activation=activation, phi=phi, integration=rule)
    transform = perturb_(transform).to(device=device, dtype=dtype)
    x = spread(dtype, device).unsqueeze(-1).expand(-1, 2).contiguous()
    assert_round_trips(transform, x, dtype)


def _decaying_on_the_left(tail: bool) -> UnconstrainedMonotone:
    # Every unit active for t < 0 has a < 0: N -> -inf on the left.
    transform = UnconstrainedMonotone(1, 4, tail=tail).double()
    with torch.no_grad():
        transform.hidden_weight.copy_(torch.tensor([[-1.0, -2.0, 1.0, 0.5]]))
        transform.hidden_bias.copy_(torch.tensor([[0.0, 1.0, 0.0, -1.0]]))
        transform.output_weight.copy_(torch.tensor([[-1.0, -0.5, 0.3, 0.2]]))
    return transform


def test_inverse_reaches_a_half_line_image_and_rejects_beyond():
    # Without a tail (the paper's model) the image is (L, inf).
    transform = _decaying_on_the_left(tail=False)
    x = torch.tensor([[-30.0], [-2.0], [0.0], [5.0]], dtype=torch.float64)
    y = transform(x)
    torch.testing.assert_close(inverse_of(transform, y)[1:], x[1:], rtol=1e-10, atol=1e-10)
    limit = transform(torch.tensor([[-1e6]], dtype=torch.float64))
    with pytest.raises(ValueError, match="outside the range.*pass tail=True"):
        inverse_of(transform, limit - 1.0)


def test_tail_makes_the_unconstrained_map_onto_the_real_line(dtype):
    # The same network with the default tail: f' >= MIN_SLOPE, so every y has a preimage, and
    # far to the left the map is the tail's line.
    transform = _decaying_on_the_left(tail=True).to(dtype)
    x = torch.tensor([[-1e4], [-30.0], [-2.0], [0.0], [5.0]], dtype=dtype)
    y = transform(x)
    torch.testing.assert_close(inverse_of(transform, y), x, rtol=1e-4, atol=1e-4)
    far = torch.tensor([[-1e4], [-2e4]], dtype=dtype)
    slope = (transform(far[:1]) - transform(far[1:])) / 1e4
    torch.testing.assert_close(slope, torch.full_like(slope, MIN_SLOPE), rtol=1e-3, atol=0.0)
    beyond = transform(x[:1]) - 100.0
    assert bool(torch.isfinite(inverse_of(transform, beyond)).all())
    assert transform.log_abs_det_jacobian(far, transform(far)).min() >= math.log(MIN_SLOPE) - 1e-6


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ConstrainedMonotone(2, 5),
        lambda: ConstrainedMonotone(2, 5, tail=False, activation="sigmoid"),
        lambda: UnconstrainedMonotone(2, 5),
        lambda: UnconstrainedMonotone(2, 5, activation="tanh", quadrature_nodes=16),
    ],
    ids=["constrained", "bounded", "exact", "quadrature"],
)
def test_gradcheck_forward_log_det_and_inverse(factory):
    transform = perturb_(factory()).double()
    parameters = [p for p in transform.parameters()]
    x = torch.tensor([[0.3, -0.8], [1.1, 0.2]], dtype=torch.float64, requires_grad=True)

    def forward(x, *params):
        return transform(x.clone()), transform.log_abs_det_jacobian(x, None)

    assert torch.autograd.gradcheck(forward, (x, *parameters))
    # The inverse's gradient (implicit function theorem) against finite differences.
    with torch.no_grad():
        y = transform(x).detach().requires_grad_()

    def inverse(y, *params):
        return transform.inv(y.clone())

    assert torch.autograd.gradcheck(inverse, (y, *parameters), atol=1e-7)


def test_inverse_gradient_is_the_reciprocal_slope():
    transform = perturb_(UnconstrainedMonotone(3, 8, activation="tanh", phi="softplus")).double()
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x = transform.inv(y)
    (grad,) = torch.autograd.grad(x.sum(), y)
    torch.testing.assert_close(
        grad, torch.exp(-transform.family.log_derivative(x.detach(), transform.network()))
    )


# --- Pyro conventions --------------------------------------------------------------------------


@pytest.mark.parametrize("helper", [constrained_monotone, unconstrained_monotone])
def test_transform_attributes(helper):
    from pyro.distributions import constraints

    transform = helper(3, width=4)
    assert transform.bijective and transform.sign == 1 and not transform.autoregressive
    assert transform.event_dim == 1 and transform.inv.event_dim == 1
    assert transform.domain is constraints.real_vector
    assert transform.codomain is constraints.real_vector
    assert transform.input_dim == 3 and transform.width == 4


@pytest.mark.parametrize("helper", [constrained_monotone, unconstrained_monotone])
def test_cache_answers_the_inverse_of_an_output_and_is_dropped_after_a_step(helper):
    transform = perturb_(helper(2, width=6))
    x = torch.randn(5, 2)
    y = transform(x)
    assert transform.inv(y) is x  # a sample scored
    repeated = transform(x)  # the same input again is recomputed (data passed every step)
    assert repeated is not y and torch.equal(repeated, y)
    y = repeated
    optimizer = torch.optim.SGD(transform.parameters(), lr=0.1)
    (-transform.log_abs_det_jacobian(x, y).sum() + y.square().sum()).backward()
    optimizer.step()
    y_new = transform(x)
    assert y_new is not y and not torch.equal(y_new, y)
    y_new.sum().backward()  # a fresh graph, not the freed one


@pytest.mark.parametrize("helper", [constrained_monotone, unconstrained_monotone])
def test_dtype_and_device_follow_the_module(helper, dtype, device):
    transform = perturb_(helper(2, width=6, **_quadrature(helper))).to(device=device, dtype=dtype)
    for tensor in itertools.chain(transform.parameters(), transform.buffers()):
        assert tensor.dtype == dtype and tensor.device.type == device.type
    x = torch.randn(7, 2, dtype=dtype, device=device)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    x_back = transform.inv(y.clone())
    for out in (y, log_det, x_back):
        assert out.dtype == dtype and out.device.type == device.type


def _quadrature(helper):
    return {"activation": "tanh"} if helper is unconstrained_monotone else {}


def test_quadrature_nodes_are_exact_after_casting():
    transform = UnconstrainedMonotone(1, 4, activation="tanh", quadrature_nodes=32)
    reference = UnconstrainedMonotone(1, 4, activation="tanh", quadrature_nodes=32).double()
    transform.float().double()  # a float32 round trip must not leave rounded nodes behind
    torch.testing.assert_close(
        transform.quadrature_nodes, reference.quadrature_nodes, rtol=0, atol=0
    )
    torch.testing.assert_close(
        transform.quadrature_weights, reference.quadrature_weights, rtol=0, atol=0
    )


def test_projected_positivity_clamps_after_a_step():
    transform = ConstrainedMonotone(1, 8, positivity="projected")
    with torch.no_grad():
        transform.raw_hidden_weight.sub_(10.0)
    transform.project_()
    assert float(transform.raw_hidden_weight.detach().min()) == pytest.approx(
        transform.projection_floor
    )
    assert bool((transform.hidden_weight > 0).all())


@pytest.mark.parametrize("helper", [constrained_monotone, unconstrained_monotone])
def test_used_transform_deep_copies_and_pickles(helper):
    import pickle

    transform = perturb_(helper(2, width=6))
    x = torch.randn(3, 2)
    y = transform(x)
    for clone in (copy.deepcopy(transform), pickle.loads(pickle.dumps(transform))):
        assert clone._cache.pair == (None, None)
        torch.testing.assert_close(clone(x), y)


def test_cache_made_without_gradients_is_not_reused_with_them():
    transform = perturb_(unconstrained_monotone(1, width=8))
    x = torch.randn(16, 1)

    def gradients():
        transform.zero_grad()
        y = transform(x)
        (y.square().sum() - transform.log_abs_det_jacobian(x, y).sum()).backward()
        return [p.grad.clone() for p in transform.parameters()]

    fresh = gradients()
    with torch.no_grad():
        transform(x)  # e.g. monitoring the NLL
    for after, before in zip(gradients(), fresh, strict=True):
        torch.testing.assert_close(after, before)


def test_cache_is_dropped_when_a_parameter_or_buffer_is_replaced():
    transform = perturb_(unconstrained_monotone(1, width=8, parametrization="gaussian-std"))
    x = torch.randn(4, 1)
    y = transform(x)
    transform.offset = torch.nn.Parameter(transform.offset.detach() + 1.0)
    torch.testing.assert_close(transform(x), y + 1.0)
    with torch.no_grad():
        transform.output_weight.mul_(2.0)  # the untrained output layer is a buffer
    assert not torch.allclose(transform(x), y + 1.0)


@pytest.mark.parametrize("raw_tail", [-30.0, -46.0, -200.0])
def test_constrained_tail_never_vanishes(raw_tail, dtype):
    # softplus(raw_tail) is tiny or underflows to 0, but the tail is floored at MIN_SLOPE: the
    # map stays onto the real line, far beyond the saturating part's range too.
    transform = perturb_(ConstrainedMonotone(1, 8)).to(dtype)
    with torch.no_grad():
        transform.raw_tail.fill_(raw_tail)
    torch.testing.assert_close(transform.tail, torch.full_like(transform.tail, MIN_SLOPE))
    x = torch.cat([torch.linspace(-3, 3, 13), torch.tensor([-1e4, 1e4])]).to(dtype).unsqueeze(-1)
    with torch.no_grad():
        x_back = inverse_of(transform, transform(x))
    torch.testing.assert_close(x_back, x, rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=1e-4)


def test_bounded_inverse_accepts_values_rounded_onto_a_bound():
    # In float32 tanh rounds to exactly +-1 at |x| ~ 40, so f(x) equals a bound of the range.
    transform = perturb_(ConstrainedMonotone(1, 4, tail=False))
    with torch.no_grad():
        y = transform(torch.tensor([[-40.0], [40.0]]))
        x_back = inverse_of(transform, y)
        torch.testing.assert_close(transform(x_back.clone()), y)


@pytest.mark.parametrize("phi", list(POSITIVE))
@pytest.mark.parametrize("activation", list(HIDDEN))
def test_every_activation_and_phi_meets_1e6_at_its_defaults(activation, phi):
    # The map at its default integration (exact for ReLU, the default quadrature otherwise)
    # against scipy's adaptive quadrature split at the ReLU kinks, on random O(1) networks.
    transform = UnconstrainedMonotone(1, 16, activation=activation, phi=phi, tail=False).double()
    x = torch.linspace(-4, 4, 9, dtype=torch.float64).unsqueeze(-1)
    for seed in range(3):
        w, b, a = random_network(16, seed=seed)
        with torch.no_grad():
            transform.hidden_weight.copy_(w)
            transform.hidden_bias.copy_(b)
            transform.output_weight.copy_(a)
            ours = transform(x).squeeze(-1)
        g = network_integrand(w, b, a, 1.0, HIDDEN[activation], POSITIVE[phi])
        for upper, value in zip(x.squeeze(-1).tolist(), ours.tolist(), strict=True):
            kinks = [k for k in (-b / w).reshape(-1).tolist() if min(0, upper) < k < max(0, upper)]
            points = kinks if activation == "relu" and kinks else None
            reference = integrate.quad(g, 0.0, upper, points=points, epsrel=1e-12, limit=200)[0]
            assert abs(value - reference) <= 1e-6 * max(1.0, abs(reference))
