"""The infinite-width view: quadrature kernels against closed forms and scipy, the empirical NTK
against per-sample autograd, its convergence to the limit like 1/sqrt(m), and laziness."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from pyro_overparam_flows import (
    constrained_monotone,
    unconstrained_monotone,
    unconstrained_monotone_autoregressive,
)
from pyro_overparam_flows.__main__ import main
from pyro_overparam_flows.experiments import kernel_convergence, laziness
from pyro_overparam_flows.ntk import (
    closed_form_kernels,
    empirical_ntk,
    infinite_width_kernels,
    kernel_distance,
    kernel_limit,
    parameter_distances,
)

X = torch.tensor([-3.0, -1.2, -0.3, 0.0, 0.4, 1.5, 2.5], dtype=torch.float64)
X2 = torch.tensor([-2.0, 0.1, 0.9, 3.0], dtype=torch.float64)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize(
    "hidden_std, bias_std, output_variance, train_output",
    [(1.0, 1.0, 1.0, True), (0.7, 1.8, 0.3, True), (2.0, 0.5, 0.0625, False)],
)
def test_quadrature_matches_closed_forms(
    activation, hidden_std, bias_std, output_variance, train_output
):
    options = dict(
        activation=activation,
        hidden_std=hidden_std,
        bias_std=bias_std,
        output_variance=output_variance,
        train_output=train_output,
    )
    for second in (None, X2):
        quadrature = infinite_width_kernels(X, second, **options)
        exact = closed_form_kernels(X, second, **options)
        assert quadrature.ntk.shape == (len(X), len(X) if second is None else len(X2))
        torch.testing.assert_close(quadrature.nngp, exact.nngp, rtol=0, atol=1e-8)
        torch.testing.assert_close(quadrature.ntk, exact.ntk, rtol=0, atol=1e-8)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize(
    "points, bias_std",
    [([-1000.0, -30.0, 0.5, 100.0], 1.0), ([-2.0, 0.0, 0.3, 1.0], 0.02)],
    ids=["large-inputs", "small-bias"],
)
def test_quadrature_stays_accurate_where_features_are_narrow(activation, points, bias_std):
    # Large |x| sigma_w / sigma_b makes rho'(u) a narrow bump around each kink.
    x = torch.tensor(points, dtype=torch.float64)
    quadrature = infinite_width_kernels(x, x + 0.25, activation=activation, bias_std=bias_std)
    exact = closed_form_kernels(x, x + 0.25, activation=activation, bias_std=bias_std)
    for got, want in zip(quadrature, exact, strict=True):
        assert float(((got - want).abs() / want.abs().max()).max()) < 1e-8


def _scipy_expectation(function, x, x2, weights, hidden_std=1.0, bias_std=1.0):
    """E over w (normal or half-normal), b ~ N(0, 1) of function(w x + b, w x2 + b), by
    adaptive quadrature split where either pre-activation changes sign."""

    def density(w, b):
        exponent = -((w / hidden_std) ** 2 + (b / bias_std) ** 2) / 2
        return np.exp(exponent) / (2 * np.pi * hidden_std * bias_std)

    factor = 2.0 if weights == "half-normal" else 1.0
    w_low = 0.0 if weights == "half-normal" else -12.0 * hidden_std

    def inner(w):
        kinks = sorted({-w * x, -w * x2})
        end = 12.0 * bias_std
        edges = [-end, *[k for k in kinks if -end < k < end], end]
        return sum(
            integrate.quad(
                lambda b: function(w * x + b, w * x2 + b) * density(w, b), lo, hi, epsabs=1e-14
            )[0]
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        )

    return factor * integrate.quad(inner, w_low, 12.0 * hidden_std, epsabs=1e-13, limit=200)[0]


_NUMPY = {
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: float(u > 0)),
    "tanh": (np.tanh, lambda u: 1 - np.tanh(u) ** 2),
    "sigmoid": (special.expit, lambda u: special.expit(u) * (1 - special.expit(u))),
    "erf": (special.erf, lambda u: 2 / np.sqrt(np.pi) * np.exp(-u * u)),
}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("weights", ["normal", "half-normal"])
def test_quadrature_matches_scipy(activation, weights):
    rho, derivative = _NUMPY[activation]
    points = torch.tensor([-1.5, 0.0, 0.8], dtype=torch.float64)
    kernels = infinite_width_kernels(points, activation=activation, weights=weights)
    for i, j in [(0, 0), (0, 2), (1, 2)]:
        x, x2 = float(points[i]), float(points[j])
        activations = _scipy_expectation(lambda u, v: rho(u) * rho(v), x, x2, weights)
        derivatives = _scipy_expectation(lambda u, v: derivative(u) * derivative(v), x, x2, weights)
        assert abs(float(kernels.nngp[i, j]) - activations) < 1e-8
        expected = activations + (x * x2 + 1) * derivatives
        assert abs(float(kernels.ntk[i, j]) - expected) < 1e-8


def test_half_normal_weights_leave_odd_activations_unchanged():
    # erf(-u) erf(-u') = erf(u) erf(u'): the law of (w, b) and (-w, -b) give the same kernel,
    # so half-normal w gives the Gaussian closed form.
    half = infinite_width_kernels(X, X2, activation="erf", weights="half-normal")
    exact = closed_form_kernels(X, X2, activation="erf")
    torch.testing.assert_close(half.ntk, exact.ntk, rtol=0, atol=1e-8)
    # ReLU is not odd: the half-normal kernel differs.
    relu_half = infinite_width_kernels(X, activation="relu", weights="half-normal")
    relu = closed_form_kernels(X, activation="relu")
    assert (relu_half.nngp - relu.nngp).abs().max() > 1e-2


def _per_sample_jacobian(transform, x, output):
    """Row i: the gradient of g(x_i) by autograd, one sample at a time."""
    names = [
        n
        for n, p in transform.named_parameters()
        if output == "flow" or n.endswith(("hidden_weight", "hidden_bias", "output_weight"))
    ]
    params = dict(transform.named_parameters())
    rows = []
    for xi in x:
        if output == "flow":
            value = transform(xi.reshape(1, 1)).sum()
        else:
            net = transform.network()
            u = xi * net.hidden_weight + net.hidden_bias
            value = net.multiplier * (transform.activation.fn(u) * net.output_weight).sum()
        grads = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(params[n]) if g is None else g).reshape(-1)
                    for g, n in zip(grads, names, strict=True)
                ]
            )
        )
    return torch.stack(rows)


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
@pytest.mark.parametrize("output", ["network", "flow"])
def test_empirical_ntk_equals_per_sample_autograd(family, output):
    make = constrained_monotone if family == "constrained" else unconstrained_monotone
    transform = make(1, 7, parametrization="ntk").double()
    with torch.no_grad():  # away from initialization
        for p in transform.parameters():
            p.add_(0.2 * torch.randn_like(p))
    jacobian = _per_sample_jacobian(transform, X, output)
    jacobian2 = _per_sample_jacobian(transform, X2, output)
    kernel = empirical_ntk(transform, X, X2, output=output)
    torch.testing.assert_close(kernel[0], jacobian @ jacobian2.T, rtol=1e-12, atol=1e-12)
    # Symmetric and positive semi-definite on one set of inputs.
    gram = empirical_ntk(transform, X, output=output)[0]
    torch.testing.assert_close(gram, gram.T)
    assert torch.linalg.eigvalsh(gram).min() > -1e-10 * gram.diagonal().max()


def test_empirical_ntk_of_unconstrained_network_in_closed_form():
    # N = c sum_r a_r relu(w_r x + b_r): dN/da_r = c relu(u_r), dN/dw_r = c a_r x 1[u_r > 0],
    # dN/db_r = c a_r 1[u_r > 0].
    transform = unconstrained_monotone(1, 50, parametrization="ntk").double()
    net = transform.network()
    w, b, a, c = net.hidden_weight[0], net.hidden_bias[0], net.output_weight[0], net.multiplier
    u, u2 = X[:, None] * w + b, X2[:, None] * w + b
    expected = c**2 * (
        torch.relu(u) @ torch.relu(u2).T
        + (X[:, None] * X2 + 1) * (((u > 0) * a.square()).double() @ (u2 > 0).double().T)
    )
    torch.testing.assert_close(empirical_ntk(transform, X, X2)[0], expected)


def test_empirical_ntk_of_several_dimensions_is_per_dimension():
    transform = constrained_monotone(2, 9, parametrization="ntk", positivity="projected")
    transform = transform.double()
    x = torch.randn(6, 2, dtype=torch.float64)
    kernel = empirical_ntk(transform, x, output="flow")
    assert kernel.shape == (2, 6, 6)
    for d in range(2):
        single = constrained_monotone(1, 9, parametrization="ntk", positivity="projected")
        single = single.double()
        with torch.no_grad():
            for name, p in single.named_parameters():
                p.copy_(dict(transform.named_parameters())[name][d : d + 1])
        torch.testing.assert_close(kernel[d], empirical_ntk(single, x[:, d::2], output="flow")[0])


def _slope(family: str) -> float:
    widths = [64, 256, 1024, 4096, 16384]
    rows = kernel_convergence(widths, range(4), families=(family,), progress=False)
    # One slope for all seeds: least squares of log error on log m.
    logs = np.log([[r["width"], r["error"]] for r in rows])
    return float(np.polyfit(logs[:, 0], logs[:, 1], 1)[0])


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_empirical_ntk_converges_like_inverse_sqrt_width(family):
    slope = _slope(family)
    assert -0.65 <= slope <= -0.35, slope


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_wider_networks_are_lazier(family):
    rows = laziness((64, 4096), (0, 1), families=(family,), progress=False)
    narrow = [r["kernel_distance"] for r in rows if r["width"] == 64]
    wide = [r["kernel_distance"] for r in rows if r["width"] == 4096]
    assert max(wide) < min(narrow), (narrow, wide)
    assert min(narrow) > 0
    # The weights move less too, relative to their size.
    for layer in ("hidden_weight", "hidden_bias"):
        key = f"relative_distance_{layer}"
        assert max(r[key] for r in rows if r["width"] == 4096) < min(
            r[key] for r in rows if r["width"] == 64
        )


def test_kernels_command_writes_tables_and_figure(tmp_path, capsys):
    main(["kernels", "--quick", "--output", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "NTK error at init" in printed and "kernel distance" in printed
    with (tmp_path / "ntk_convergence.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 2 and all(0 < float(r["error"]) < 1 for r in rows)
    assert (tmp_path / "laziness.csv").exists()
    assert (tmp_path / "kernels.png").read_bytes()[:4] == b"\x89PNG"


def test_kernel_limit_of_each_parametrization():
    unconstrained = unconstrained_monotone(1, 8, parametrization="gaussian-std")
    assert kernel_limit(unconstrained) == ("relu", "normal", 1.0, 0.0625, False)
    constrained = constrained_monotone(
        1, 8, parametrization="standard-normal", positivity="projected"
    )
    assert kernel_limit(constrained).weights == "half-normal"
    for name in ("standard", "mean_field", "gaussian-sqrt(m)"):
        with pytest.raises(ValueError, match="no finite non-zero infinite-width limit"):
            kernel_limit(unconstrained_monotone(1, 8, parametrization=name))
    with pytest.raises(ValueError, match="positivity='projected'"):
        kernel_limit(constrained_monotone(1, 8, parametrization="ntk"))


def test_parameter_and_kernel_distances():
    transform = unconstrained_monotone(1, 16, parametrization="ntk")
    start = {k: v.detach().clone() for k, v in transform.named_parameters()}
    with torch.no_grad():
        transform.hidden_bias.add_(1.0)
    distances = parameter_distances(transform, start)
    assert distances["hidden_weight"] == (0.0, 0.0)
    moved, relative = distances["hidden_bias"]
    assert math.isclose(moved, 4.0, rel_tol=1e-6)
    assert math.isclose(relative, 4.0 / float(start["hidden_bias"].norm()), rel_tol=1e-6)
    kernel = torch.eye(3)
    assert float(kernel_distance(2 * kernel, kernel)) == pytest.approx(1.0)


def test_ntk_functions_run_on_device_and_in_float32(device):
    transform = unconstrained_monotone(1, 32, parametrization="ntk").to(device)
    x = torch.linspace(-1, 1, 5, device=device)
    kernel = empirical_ntk(transform, x)
    assert kernel.device.type == device.type and kernel.dtype == torch.float32
    limit = infinite_width_kernels(x.double(), activation="tanh", weights="half-normal")
    assert limit.ntk.device.type == device.type and torch.isfinite(limit.ntk).all()


def test_bad_input_gets_clear_errors():
    transform = unconstrained_monotone(1, 8)
    with pytest.raises(TypeError, match="element-wise"):
        empirical_ntk(unconstrained_monotone_autoregressive(2, 8), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="element-wise"):
        kernel_limit(unconstrained_monotone_autoregressive(2, 8))
    with pytest.raises(ValueError, match="n >= 1"):
        empirical_ntk(transform, torch.zeros(0, 1))
    with pytest.raises(ValueError, match="floating-point"):
        infinite_width_kernels(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="bias_std must be a positive number"):
        closed_form_kernels(X, bias_std=0.0)
    with pytest.raises(ValueError, match="output_variance"):
        closed_form_kernels(X, output_variance=-1.0)
    with pytest.raises(ValueError, match="unknown output"):
        empirical_ntk(transform, torch.zeros(3), output="jacobian")
    with pytest.raises(ValueError, match="shape"):
        empirical_ntk(transform, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        empirical_ntk(transform, torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match="dtype"):
        empirical_ntk(transform, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown activation"):
        infinite_width_kernels(X, activation="gelu")
    with pytest.raises(ValueError, match="unknown weights"):
        infinite_width_kernels(X, weights="uniform")
    with pytest.raises(ValueError, match="hidden_std must be a positive number"):
        infinite_width_kernels(X, hidden_std=0.0)
    with pytest.raises(ValueError, match="radial_nodes"):
        infinite_width_kernels(X, radial_nodes=0)
    with pytest.raises(ValueError, match="scalar inputs"):
        infinite_width_kernels(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="must be finite"):
        infinite_width_kernels(torch.tensor([math.inf], dtype=torch.float64))
    with pytest.raises(ValueError, match="'relu' and 'erf' only"):
        closed_form_kernels(X, activation="tanh")
    with pytest.raises(ValueError, match="same shape"):
        kernel_distance(torch.eye(2), torch.eye(3))
