"""The scalar numerics against independent computation: closed forms, scipy, plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

from pyro_overparam_flows.activations import HIDDEN, POSITIVE
from pyro_overparam_flows.numerics import (
    RELU_INTEGRANDS,
    bracket_increasing,
    integrate_one_hidden_layer,
    quadrature_rule,
    relu_integral,
    solve_increasing,
)
from pyro_overparam_flows.transforms.unconstrained import DEFAULT_QUADRATURE_NODES

from helpers import network_integrand, random_network, split_reference

SMOOTH = ("tanh", "sigmoid", "softplus", "erf")


def plain_quadrature(x, w, b, a, c, rho, phi, nodes, weights):
    """The same discretized integral by plain autograd, storing every activation."""
    t = x.unsqueeze(-1) * nodes  # (*batch, D, K)
    u = t.unsqueeze(-1) * w.unsqueeze(-2) + b.unsqueeze(-2)  # (*batch, D, K, m)
    n = c * (rho.fn(u) * a.unsqueeze(-2)).sum(-1)
    return x * (weights * phi.fn(n)).sum(-1)


# --- quadrature rules --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 5, 16, 64])
def test_gauss_legendre_is_exact_to_degree_2k_minus_1(count):
    nodes, weights = quadrature_rule("gauss-legendre", count)
    for degree in range(2 * count):
        assert float((weights * nodes**degree).sum()) == pytest.approx(1 / (degree + 1), abs=1e-14)


@pytest.mark.parametrize("count", [2, 3, 9, 17, 64])
def test_clenshaw_curtis_is_exact_to_degree_k_minus_1(count):
    nodes, weights = quadrature_rule("clenshaw-curtis", count)
    assert float(nodes[0]) == 0.0 and float(nodes[-1]) == 1.0
    for degree in range(count):
        assert float((weights * nodes**degree).sum()) == pytest.approx(1 / (degree + 1), abs=1e-14)


def test_quadrature_rule_follows_dtype_and_device(dtype, device):
    nodes, weights = quadrature_rule("clenshaw-curtis", 9, dtype=dtype, device=device)
    assert nodes.dtype == weights.dtype == dtype
    assert nodes.device.type == weights.device.type == device.type


@pytest.mark.parametrize("rule", ["gauss-legendre", "clenshaw-curtis"])
@pytest.mark.parametrize("phi", list(POSITIVE))
@pytest.mark.parametrize("activation", SMOOTH)
def test_default_quadrature_matches_scipy(rule, phi, activation):
    """Relative error under 1e-6 at the default K, for x in [-4, 4]."""
    rho, positive = HIDDEN[activation], POSITIVE[phi]
    nodes, weights = quadrature_rule(rule, DEFAULT_QUADRATURE_NODES[phi])
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    for seed, width in enumerate((3, 16, 64)):
        w, b, a = random_network(width, seed=seed)
        g = network_integrand(w, b, a, 1.0, rho, positive)
        reference = torch.tensor(
            [integrate.quad(g, 0.0, float(v), epsabs=1e-13, epsrel=1e-13, limit=200)[0] for v in x],
            dtype=torch.float64,
        )
        ours = integrate_one_hidden_layer(
            x.unsqueeze(-1), w, b, a, 1.0, rho, positive, nodes, weights
        ).squeeze(-1)
        error = (ours - reference).abs() / reference.abs().clamp(min=1.0)
        assert float(error.max()) < 1e-6


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
@pytest.mark.parametrize("batch", [(), (5,), (4, 3)])
def test_exact_relu_integral_matches_scipy(batch, phi):
    generator = torch.Generator().manual_seed(1)
    w, b, a = random_network(7, batch=batch, dim=2, seed=3)
    x = 6 * torch.randn(*batch, 2, generator=generator, dtype=torch.float64)
    x.view(-1)[0] = 0.0
    ours = relu_integral(x, w, b, a, 0.7, phi)
    flat = ours.reshape(-1)
    parameters = [v.reshape(-1, 7) for v in (w, b, a)]
    for i, upper in enumerate(x.reshape(-1).tolist()):
        wi, bi, ai = (p[i] for p in parameters)
        g = network_integrand(wi, bi, ai, 0.7, HIDDEN["relu"], POSITIVE[phi])
        kinks = [k for k in (-bi / wi).tolist() if min(0, upper) < k < max(0, upper)]
        reference = integrate.quad(
            g, 0.0, upper, points=kinks or None, epsabs=1e-13, epsrel=1e-12, limit=200
        )[0]
        assert float(flat[i]) == pytest.approx(reference, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
def test_exact_relu_integral_shared_parameters_broadcast_over_batch(phi):
    w, b, a = random_network(9, dim=3, seed=4)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    shared = relu_integral(x, w, b, a, 1.0, phi)
    expanded = relu_integral(x, *(v.expand(4, 5, 3, 9) for v in (w, b, a)), 1.0, phi)
    assert shared.shape == (4, 5, 3)
    torch.testing.assert_close(shared, expanded, rtol=1e-13, atol=1e-13)


# --- the custom backward -----------------------------------------------------------------------


@pytest.mark.parametrize("phi", list(POSITIVE))
@pytest.mark.parametrize("activation", list(HIDDEN))
def test_quadrature_gradcheck(activation, phi):
    rho, positive = HIDDEN[activation], POSITIVE[phi]
    nodes, weights = quadrature_rule("gauss-legendre", 6)
    w, b, a = (v.requires_grad_() for v in random_network(5, batch=(2,), dim=2, seed=5))
    x = torch.tensor([[0.7, -1.3], [2.1, 0.4]], dtype=torch.float64, requires_grad=True)

    def fn(x, w, b, a):
        return integrate_one_hidden_layer(x, w, b, a, 0.8, rho, positive, nodes, weights)

    assert torch.autograd.gradcheck(fn, (x, w, b, a))


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-row"])
@pytest.mark.parametrize("activation", list(HIDDEN))
def test_quadrature_gradient_equals_plain_autograd(activation, shared):
    rho, positive = HIDDEN[activation], POSITIVE["elu_plus_one"]
    nodes, weights = quadrature_rule("clenshaw-curtis", 33)
    batch = () if shared else (4,)
    params = [v.requires_grad_() for v in random_network(11, batch=batch, dim=3, seed=6)]
    x = (2 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    grad_out = torch.randn(4, 3, dtype=torch.float64)
    args = (1.3, rho, positive, nodes, weights)
    ours = integrate_one_hidden_layer(x, *params, *args)
    plain = plain_quadrature(x, *params, *args)
    torch.testing.assert_close(ours, plain, rtol=1e-13, atol=1e-13)
    grads = torch.autograd.grad(ours, [x, *params], grad_out)
    plain_grads = torch.autograd.grad(plain, [x, *params], grad_out)
    for g, p in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, p, rtol=1e-10, atol=1e-10)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_bytes_saved_for_backward_do_not_grow_with_nodes():
    w, b, a = (v.requires_grad_() for v in random_network(64, dim=2, seed=7))
    x = torch.randn(256, 2, dtype=torch.float64, requires_grad=True)
    rho, positive = HIDDEN["tanh"], POSITIVE["elu_plus_one"]

    def measure(integral, count):
        nodes, weights = quadrature_rule("gauss-legendre", count)
        return saved_bytes(lambda: integral(x, w, b, a, 1.0, rho, positive, nodes, weights))

    small, large = (measure(integrate_one_hidden_layer, k) for k in (8, 512))
    assert small == large
    # One number per row for x and one per row and unit for w, b and a: nothing per node.
    assert small == 8 * (x.numel() + 3 * x.numel() * 64)
    # The measurement sees what plain autograd keeps: every node's activations.
    assert measure(plain_quadrature, 512) > 64 * measure(plain_quadrature, 8) / 8 > small


# --- root finding ------------------------------------------------------------------------------


def test_solve_increasing_recovers_closed_form_inverses(dtype):
    y = torch.linspace(-20, 20, 101, dtype=dtype)
    # f(x) = x^3 + x: Newton from the midpoint of a wide bracket; f = atan-like: Newton alone
    # diverges from far away, so the safeguard must act.
    cubic = lambda x: (x**3 + x, 3 * x**2 + 1)  # noqa: E731
    lower, upper = torch.full_like(y, -30.0), torch.full_like(y, 30.0)
    x, done = solve_increasing(cubic, y, lower, upper)
    assert bool(done.all())
    torch.testing.assert_close(
        x**3 + x, y, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5
    )
    target = torch.linspace(-1.5, 1.5, 41, dtype=dtype)
    arctan = lambda x: (torch.atan(x), 1 / (1 + x**2))  # noqa: E731
    lower, upper = torch.full_like(target, -1e3), torch.full_like(target, 1e3)
    x, done = solve_increasing(arctan, target, lower, upper, torch.full_like(target, 900.0))
    assert bool(done.all())
    torch.testing.assert_close(
        x, torch.tan(target), rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-6
    )


def test_bracket_reports_targets_outside_a_bounded_range(dtype):
    y = torch.tensor([-0.5, 0.999, 2.0, -7.0], dtype=dtype)
    lower, upper, found = bracket_increasing(torch.tanh, y, torch.zeros_like(y))
    assert found.tolist() == [True, True, False, False]
    assert bool((torch.tanh(lower[:2]) <= y[:2]).all() and (torch.tanh(upper[:2]) >= y[:2]).all())


def test_bracket_accepts_targets_rounded_onto_an_asymptote():
    # f(x) = 1 - exp(-x) is 1 to float64 precision beyond x ~ 37; y = f(100) must be found.
    f = lambda x: -torch.expm1(-x)  # noqa: E731
    y = f(torch.tensor([100.0, 5.0], dtype=torch.float64))
    _, _, found = bracket_increasing(f, y, torch.zeros_like(y))
    assert bool(found.all())


def test_solver_has_no_elementwise_python_loop():
    # One call solves a million elements in one batch of tensor operations.
    y = torch.linspace(-5, 5, 1_000_000, dtype=torch.float64)
    calls = 0

    def fn(x):
        nonlocal calls
        calls += 1
        return x + torch.sin(x) / 2, 1 + torch.cos(x) / 2

    x, done = solve_increasing(fn, y, y - 1, y + 1)
    assert bool(done.all()) and calls <= 16
    torch.testing.assert_close(x + torch.sin(x) / 2, y, rtol=0, atol=1e-13)
    assert np.isfinite(x.numpy()).all()


def test_bracket_never_ends_at_an_infinite_point():
    # atan(x) + 1e-40 x is increasing and unbounded, but its root for y = -2 lies beyond
    # float32's largest number: f(-inf) = -inf must not count as a bracket end.
    y = torch.tensor([-2.0, 0.5], dtype=torch.float32)
    lower, upper, found = bracket_increasing(
        lambda x: torch.atan(x) + 1e-40 * x, y, torch.zeros_like(y)
    )
    assert found.tolist() == [False, True]
    assert bool(torch.isfinite(lower[1]) and torch.isfinite(upper[1]))


def test_exact_relu_gradient_for_a_unit_with_zero_weight():
    # w = 0, b > 0: the unit is active everywhere and its gradient in w must not vanish.
    w = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.5, -0.2]], dtype=torch.float64)
    a = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    x = torch.tensor([[1.3]], dtype=torch.float64)
    (exact,) = torch.autograd.grad(relu_integral(x, w, b, a, 1.0).sum(), w)
    nodes, weights = quadrature_rule("gauss-legendre", 4000)
    reference = integrate_one_hidden_layer(
        x, w, b, a, 1.0, HIDDEN["relu"], POSITIVE["elu_plus_one"], nodes, weights
    )
    (expected,) = torch.autograd.grad(reference.sum(), w)
    # The quadrature reference converges slowly across the other unit's kink (at t = 0.2).
    assert float(exact[0, 0]) != 0.0
    torch.testing.assert_close(exact, expected, rtol=1e-4, atol=1e-5)


def test_quadrature_broadcasts_x_against_batched_parameters():
    w, b, a = random_network(5, batch=(8,), dim=2, seed=9)
    x = torch.tensor([0.5, -1.5], dtype=torch.float64)
    nodes, weights = quadrature_rule("gauss-legendre", 8)
    args = (1.0, HIDDEN["tanh"], POSITIVE["softplus"], nodes, weights)
    ours = integrate_one_hidden_layer(x, w, b, a, *args)
    expanded = integrate_one_hidden_layer(x.expand(8, 2), w, b, a, *args)
    assert ours.shape == (8, 2)
    torch.testing.assert_close(ours, expanded, rtol=0, atol=0)


def test_stalled_newton_step_is_not_reported_as_converged():
    # An infinite slope makes the Newton step zero: the solver must bisect, not stop.
    y = torch.tensor([0.3], dtype=torch.float64)
    steep = lambda x: (x, torch.full_like(x, float("inf")))  # noqa: E731
    x, converged = solve_increasing(
        steep, y, torch.tensor([-1.0]).double(), torch.ones(1).double(), torch.zeros(1).double()
    )
    assert bool(converged.all())
    torch.testing.assert_close(x, y)


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
@pytest.mark.parametrize("batch", [(), (4,)], ids=["shared", "per-row"])
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_exact_relu_integral_analytic_backward_gradcheck(batch, scale, phi):
    # Units with w = 0 (active everywhere or never), queries at 0 and on both sides, pieces
    # wholly below or above N = 0 and crossing it, slopes from small to large.
    w, b, a = random_network(6, batch=batch, dim=2, seed=11)
    w[..., 0] = 0.0
    b[..., 1] = -b[..., 1].abs()
    a = a * scale
    generator = torch.Generator().manual_seed(12)
    x = 2.5 * torch.randn(*(batch or (5,)), 2, generator=generator, dtype=torch.float64)
    x.view(-1)[0] = 0.0
    inputs = [v.clone().requires_grad_() for v in (x, w, b, a)]
    assert torch.autograd.gradcheck(
        lambda x, w, b, a: relu_integral(x, w, b, a, 0.8, phi), inputs, atol=1e-8
    )


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
def test_exact_relu_integral_backward_in_float32_matches_float64(phi):
    w, b, a = random_network(64, dim=3, seed=13)
    x = torch.randn(50, 3, dtype=torch.float64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        inputs = [v.to(dtype).requires_grad_() for v in (x, w, b, a)]
        relu_integral(*inputs, 1.0, phi).sum().backward()
        grads[dtype] = [v.grad.double() for v in inputs]
    for low, high in zip(grads[torch.float32], grads[torch.float64], strict=True):
        torch.testing.assert_close(low, high, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
@pytest.mark.parametrize("per_row", [False, True], ids=["shared", "per-row"])
def test_exact_relu_integral_agrees_with_a_1e12_reference(per_row, phi):
    w, b, a = random_network(12, batch=(40,) if per_row else (), dim=1, seed=21)
    w, b = 2 * w, 2 * b
    generator = torch.Generator().manual_seed(22)
    x = 5 * torch.randn(40, 1, generator=generator, dtype=torch.float64)
    ours = relu_integral(x, w, b, a, 0.7, phi).reshape(-1)
    for i, upper in enumerate(x.reshape(-1).tolist()):
        row = (v[i] if per_row else v for v in (w, b, a))
        reference = split_reference(*row, 0.7, upper, phi)
        assert float(ours[i]) == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
def test_exact_relu_integral_per_row_equals_shared_with_gradients(phi):
    # The per-row path (one query per parameter row, pieces clipped to [0, x]) against the
    # shared path (pieces integrated once, gathered per query), values and gradients, with
    # slopes from 1e-9 (series branches) to 1e2 and queries from 0 to 30.
    w, b, a = random_network(10, dim=3, seed=23)
    w = w * torch.logspace(-9, 2, 10, dtype=torch.float64)
    x = torch.tensor([[0.0, 1e-3, -2.0], [7.0, -30.0, 30.0], [0.5, -0.25, 3.0]]).double()
    grads = []
    for expand in (False, True):
        inputs = [v.clone().requires_grad_() for v in (x, w, b, a)]
        xi, wi, bi, ai = inputs
        if expand:
            wi, bi, ai = (v.expand(3, 3, 10) for v in (wi, bi, ai))
        value = relu_integral(xi, wi, bi, ai, 1.3, phi)
        value.sum().backward()
        grads.append([value.detach(), *(v.grad for v in inputs)])
    for shared, per_row in zip(*grads, strict=True):
        torch.testing.assert_close(per_row, shared, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
def test_exact_relu_integral_per_row_backward_in_float32_matches_float64(phi):
    w, b, a = random_network(32, batch=(50,), dim=3, seed=24)
    x = torch.randn(50, 3, dtype=torch.float64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        inputs = [v.to(dtype).requires_grad_() for v in (x, w, b, a)]
        relu_integral(*inputs, 1.0, phi).sum().backward()
        grads[dtype] = [v.grad.double() for v in inputs]
    for low, high in zip(grads[torch.float32], grads[torch.float64], strict=True):
        torch.testing.assert_close(low, high, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("phi", list(RELU_INTEGRANDS))
def test_exact_relu_gradients_of_a_left_active_unit_in_float32(phi):
    # A unit with w < 0 is active before its breakpoint: its gradients are sums over the pieces
    # before it, not the total minus the pieces after (which cancels in float32 when the
    # breakpoint is near 0 and x is far).
    w = torch.tensor([[[-1.0, 0.8, 0.3]]], dtype=torch.float64)
    b = torch.tensor([[[1e-4, -1.0, 0.2]]], dtype=torch.float64)  # the first breakpoint at 1e-4
    a = torch.tensor([[[0.9, -0.5, 0.4]]], dtype=torch.float64)
    x = torch.tensor([[5.0]], dtype=torch.float64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        inputs = [v.to(dtype).requires_grad_() for v in (x, w, b, a)]
        relu_integral(*inputs, 1.0, phi).sum().backward()
        grads[dtype] = [v.grad.double() for v in inputs]
    for low, high in zip(grads[torch.float32], grads[torch.float64], strict=True):
        torch.testing.assert_close(low, high, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("shape", [(0, 3), (0, 0, 3)])
def test_integrals_of_an_empty_batch(shape):
    w, b, a = (v.requires_grad_() for v in random_network(4, dim=3, seed=25))
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    per_row = [v.expand(*shape, 4) for v in (w, b, a)]
    nodes, weights = quadrature_rule("gauss-legendre", 8)
    rho, positive = HIDDEN["tanh"], POSITIVE["softplus"]
    for value in (
        relu_integral(x, w, b, a, 1.0),
        relu_integral(x, *per_row, 1.0),
        integrate_one_hidden_layer(x, *per_row, 1.0, rho, positive, nodes, weights),
    ):
        assert value.shape == shape
        value.sum().backward()
    assert w.grad.abs().sum() == 0 and x.grad.shape == shape


def test_softplus_antiderivative_is_the_dilogarithm(dtype):
    # G(v) = -Li2(-e^v), against mpmath at 40 digits (scipy's spence loses digits here).
    import mpmath

    from pyro_overparam_flows.numerics.piecewise import _dilogarithm

    # Down to where e^v stays a normal number of the dtype.
    deepest = 2.5 if dtype == torch.float64 else 1.9
    v = torch.cat([-torch.logspace(-8, deepest, 40), torch.zeros(1)]).to(dtype).double()
    with mpmath.workdps(40):
        reference = [float(-mpmath.polylog(2, -mpmath.exp(mpmath.mpf(t)))) for t in v.tolist()]
    ours = _dilogarithm(v.to(dtype)).double()
    tolerance = 2 * torch.finfo(dtype).eps
    expected = torch.tensor(reference, dtype=torch.float64)
    torch.testing.assert_close(ours, expected, rtol=tolerance, atol=0.0)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("gap", [0.5 - 1e-9, 0.5 + 1e-9])
def test_softplus_pieces_agree_across_the_short_piece_switch(gap):
    # A piece of u-length just under 1/2 takes Gauss-Legendre, just over the closed forms:
    # both give the integral and the moments to rounding, wherever the piece lies.
    from pyro_overparam_flows.numerics.piecewise import _softplus_pieces

    centres = torch.tensor([-40.0, -3.0, -0.5, 0.0, 0.3, 2.0, 50.0], dtype=torch.float64)
    for slope in (1.0, -1.0, 1e-3):
        length = gap / abs(slope)
        starts = torch.full_like(centres, -length / 2)
        ends = starts + length
        intercept = centres - 0.54132485461291800  # v = u + log(e - 1) is centred at `centres`
        ours = _softplus_pieces(starts, ends, torch.full_like(centres, slope), intercept, True)
        for value, name in zip(ours, ("integral", "zeroth", "first"), strict=True):
            expected = []
            for c in centres.tolist():

                def integrand(t, c=c, slope=slope, name=name):
                    v = c + slope * t
                    sp = np.logaddexp(0.0, v)
                    sig = 1.0 / (1.0 + np.exp(-v))
                    return {"integral": sp, "zeroth": sig, "first": t * sig}[name]

                expected.append(
                    integrate.quad(integrand, -length / 2, length / 2, epsabs=1e-300, epsrel=1e-14)[
                        0
                    ]
                )
            expected = torch.tensor(expected, dtype=torch.float64)
            scale = expected.abs() + (length**2 if name == "first" else 0.0) * 1e-3
            assert float(((value - expected).abs() / scale).max()) < 1e-11, name
