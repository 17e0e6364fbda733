"""The native CPU kernels (numerics.native) against the PyTorch code they replace, float64
gradcheck, their layouts, threads and fallbacks; the flows with the kernels on and off; the
linear conditioner (hidden_dims=())."""

from __future__ import annotations

import warnings

import pyro.distributions as dist
import pytest
import torch

import pyro_overparam_flows as pof
from pyro_overparam_flows.activations import HIDDEN, POSITIVE, SATURATING
from pyro_overparam_flows.maps import (
    constrained_log_derivative,
    constrained_map,
    constrained_map_and_log_derivative,
)
from pyro_overparam_flows.numerics import native
from pyro_overparam_flows.numerics.piecewise import relu_integral
from pyro_overparam_flows.transforms.conditioners import LinearAutoregressiveNN

pytestmark = pytest.mark.skipif(
    not native.native_available(), reason="no C compiler: the native kernels are not built"
)


@pytest.fixture
def torch_path():
    """Run the body with the native kernels off: the PyTorch reference."""

    class Switch:
        def __enter__(self):
            self.previous = native.use_native(False)

        def __exit__(self, *exc):
            native.use_native(self.previous)

    return Switch()


def _inputs(dtype, batch=(6,), dims=3, width=40, shared_bias=False, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape, scale=1.0):
        value = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
        return value.to(dtype).requires_grad_()

    x = draw(*batch, dims, scale=2.0)
    w = draw(dims, width)
    b = draw(dims, width) if shared_bias else draw(*batch, dims, width)
    a = draw(dims, width, scale=width**-0.5)
    return x, w, b, a


def _value_and_gradients(function, inputs, seed=1):
    outputs = function(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outputs]
    total = sum((o * g).sum() for o, g in zip(outputs, weights, strict=True))
    return [o.detach() for o in outputs], torch.autograd.grad(total, inputs)


def _close(ours, reference, dtype):
    tolerance = {torch.float64: 1e-11, torch.float32: 2e-5}[dtype]
    for value, expected in zip(ours, reference, strict=True):
        scale = expected.abs().max().clamp(min=1.0)
        assert (value - expected).abs().max() <= tolerance * scale


@pytest.mark.parametrize("shared_bias", [False, True], ids=["bias per row", "shared bias"])
def test_integral_and_network_equal_the_pytorch_code(dtype, torch_path, shared_bias):
    inputs = _inputs(dtype, shared_bias=shared_bias)
    relu, phi = HIDDEN["relu"], POSITIVE["elu_plus_one"]

    def ours(x, w, b, a):
        return native.relu_integral_and_network(x, w, b, a, 0.7)

    def reference(x, w, b, a):
        # expanded weights take the per-row PyTorch code even when they are shared
        expanded = [t.expand(x.shape + (w.shape[-1],)) for t in (w, b, a)]
        integral = relu_integral(x, *expanded, 0.7)
        return integral, 0.7 * (relu.fn(x.unsqueeze(-1) * w + b) * a).sum(-1)

    mine = _value_and_gradients(ours, inputs)
    with torch_path:
        theirs = _value_and_gradients(reference, inputs)
    _close(mine[0], theirs[0], dtype)
    _close(mine[1], theirs[1], dtype)
    assert phi.name == "elu_plus_one"


@pytest.mark.parametrize("activation", list(native.SATURATING_KINDS))
@pytest.mark.parametrize("shared_bias", [False, True], ids=["bias per row", "shared bias"])
def test_saturating_kernel_equals_the_pytorch_code(dtype, torch_path, activation, shared_bias):
    transform = pof.constrained_monotone(3, width=40, activation=activation).to(dtype)
    net = transform.network()
    x, _, b, _ = _inputs(dtype, shared_bias=shared_bias)
    net = net._replace(hidden_bias=b)
    sigma = SATURATING[activation]
    leaves = [x, transform.raw_hidden_weight, transform.raw_output_weight, b]

    def both(*_):
        fresh = transform.network()._replace(hidden_bias=b)
        return constrained_map_and_log_derivative(x, fresh, sigma)

    def separately(*_):
        fresh = transform.network()._replace(hidden_bias=b)
        return constrained_map(x, fresh, sigma), constrained_log_derivative(x, fresh, sigma)

    mine = _value_and_gradients(both, leaves)
    with torch_path:
        theirs = _value_and_gradients(separately, leaves)
    _close(mine[0], theirs[0], dtype)
    _close(mine[1], theirs[1], dtype)
    assert net.hidden_bias is b


def test_float64_gradcheck_of_every_kernel():
    x, w, b, a = _inputs(torch.float64, batch=(4,), dims=2, width=7)
    checks = [
        lambda x, w, b, a: native.relu_integral_and_network(x, w, b, a, 0.9),
        lambda x, w, b, a: native.relu_network(x, w, b, a, 0.9),
        lambda x, w, b, a: native.relu_integral_rows(x, w, b[0], a, 0.9),  # shared bias
    ]
    for check in checks:
        assert torch.autograd.gradcheck(check, (x, w, b, a))
    for activation in native.SATURATING_KINDS:

        def saturating(x, b, log_w, log_a, activation=activation):
            return native.saturating(x, log_w.exp(), b, log_a.exp(), log_w, log_a, 0.3, activation)

        assert torch.autograd.gradcheck(saturating, (x, b, w, a))
        assert torch.autograd.gradcheck(saturating, (x, b[0], w, a))


def test_layouts_broadcast_slices_and_batch_shapes(torch_path):
    dtype = torch.float64
    x = torch.randn(2, 5, 3, dtype=dtype)
    w = torch.randn(3, 16, dtype=dtype)
    a = torch.randn(3, 16, dtype=dtype) / 4
    numbers = torch.randn(5, 3, 20, dtype=dtype)  # a conditioner's output: b is a slice
    cases = {
        "slice, broadcast over the leading batch": numbers[..., 2:18],
        "broadcast inside the batch": torch.randn(2, 1, 3, 16, dtype=dtype),
        "one row for all": torch.randn(1, 16, dtype=dtype),
    }
    for name, b in cases.items():
        ours = native.relu_integral_and_network(x, w, b, a, 0.5)
        with torch_path:
            expanded = [t.expand(2, 5, 3, 16) for t in (w, b, a)]
            integral = relu_integral(x, *expanded, 0.5)
            network = 0.5 * (torch.relu(x.unsqueeze(-1) * w + b) * a).sum(-1)
        assert torch.allclose(ours[0], integral, rtol=1e-12, atol=1e-12), name
        assert torch.allclose(ours[1], network, rtol=1e-12, atol=1e-12), name


def test_threads_split_the_rows_and_agree_with_one_thread():
    inputs = _inputs(torch.float64, batch=(512,), dims=4, width=64)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _value_and_gradients(lambda *t: native.relu_integral_and_network(*t, 0.5), inputs)
        torch.set_num_threads(2)
        assert len(native._chunks(512 * 4, 64)) == 2
        two = _value_and_gradients(lambda *t: native.relu_integral_and_network(*t, 0.5), inputs)
    finally:
        torch.set_num_threads(previous)
    _close(two[0], one[0], torch.float64)
    _close(two[1], one[1], torch.float64)


def test_saturating_log_slope_far_in_the_tails_equals_logsumexp(torch_path):
    # sigma'(u) underflows double at |u| ~ 370: the kernel switches to a log-sum-exp
    transform = pof.constrained_monotone(2, width=8, tail=False).to(torch.float64)
    x = torch.tensor([[400.0, -1000.0], [0.0, 2000.0]], dtype=torch.float64)
    net, sigma = transform.network(), transform.activation
    ours = constrained_map_and_log_derivative(x, net, sigma)[1]
    with torch_path:
        reference = constrained_log_derivative(x, net, sigma)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, reference, rtol=1e-12)


def test_integral_of_zero_limits_and_zero_weights():
    x = torch.tensor([[0.0, 1.5, -2.0]], dtype=torch.float64)
    w = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[[1.0, -1.0], [0.5, -0.5], [1.0, 3.0]]], dtype=torch.float64)
    a = torch.ones(3, 2, dtype=torch.float64)
    integral, network = native.relu_integral_and_network(x, w, b, a, 1.0)
    assert integral[0, 0] == 0.0  # an empty interval
    # N = relu(0.5) = 0.5 constant: the integral of 1.5 over [0, 1.5]
    assert torch.isclose(integral[0, 1], torch.tensor(2.25, dtype=torch.float64))
    assert torch.allclose(network[0], torch.tensor([1.0, 0.5, 3.0], dtype=torch.float64))


def test_non_finite_limits_take_the_pytorch_code():
    x = torch.tensor([[float("inf"), 1.0]])
    w, b, a = torch.ones(2, 4), torch.zeros(1, 2, 4), torch.zeros(2, 4)
    with torch.no_grad():
        value = relu_integral(x, w, b, a, 1.0)  # no error from the kernel
    assert value[0, 1] == 1.0


@pytest.mark.parametrize(
    "maker",
    [
        pof.unconstrained_monotone_autoregressive,
        pof.constrained_monotone_autoregressive,
        pof.unconstrained_monotone_coupling,
        pof.constrained_monotone_coupling,
        pof.unconstrained_monotone,
        pof.constrained_monotone,
    ],
)
def test_flows_give_the_same_log_prob_and_gradients_with_the_kernels_off(maker, torch_path):
    torch.manual_seed(0)
    transform = maker(4, 24).to(torch.float64)
    with torch.no_grad():  # away from the initialization, where paired units cancel
        for p in transform.parameters():
            p.add_(0.3 * torch.randn_like(p))
    flow = dist.TransformedDistribution(
        dist.Normal(torch.zeros(4, dtype=torch.float64), 1.0).to_event(1), [transform.inv]
    )
    x = torch.randn(64, 4, dtype=torch.float64)
    params = list(transform.parameters())

    def log_prob_and_gradients():
        log_prob = flow.log_prob(x)
        return log_prob.detach(), torch.autograd.grad(log_prob.sum(), params)

    ours = log_prob_and_gradients()
    with torch_path:
        reference = log_prob_and_gradients()
    assert torch.allclose(ours[0], reference[0], rtol=1e-11, atol=1e-11)
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-9, atol=1e-11)


def test_the_log_jacobian_reuses_the_forward_pass_only_for_the_same_unchanged_x(monkeypatch):
    transform = pof.constrained_monotone_autoregressive(3, 8).to(torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    calls = []
    original = native.saturating
    monkeypatch.setattr(native, "saturating", lambda *a: calls.append(1) or original(*a))
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    assert len(calls) == 1  # one pass for both
    with torch.no_grad():
        x.add_(0.5)  # changed in place: recomputed
    changed = transform.log_abs_det_jacobian(x, y)
    assert len(calls) == 2
    assert not torch.allclose(changed, log_det)


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_linear_conditioner_is_autoregressive_and_exact(family):
    torch.manual_seed(0)
    maker = getattr(pof, f"{family}_monotone_autoregressive")
    order = torch.tensor([2, 0, 3, 1])
    transform = maker(4, 16, hidden_dims=(), permutation=order).to(torch.float64)
    assert isinstance(transform.arn, LinearAutoregressiveNN)
    x0 = torch.randn(4, dtype=torch.float64)
    start = torch.autograd.functional.jacobian(transform, x0)
    assert torch.equal(start, torch.diag(start.diagonal()))  # the element-wise start
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(0.2 * torch.randn_like(p))
    jacobian = torch.autograd.functional.jacobian(transform, x0)
    permuted = jacobian[order][:, order]  # triangular in the variable order
    assert torch.allclose(permuted, permuted.tril(), atol=0)
    log_det = transform.log_abs_det_jacobian(x0, transform(x0))
    assert torch.isclose(log_det, torch.linalg.slogdet(jacobian)[1])
    x = torch.randn(32, 4, dtype=torch.float64)
    assert torch.allclose(transform.inv(transform(x)), x, atol=1e-9)


def test_linear_conditioner_is_for_unconditional_flows_only():
    with pytest.raises(ValueError, match="hidden_dims=\\(\\)"):
        pof.conditional_unconstrained_monotone_autoregressive(3, 2, 8, hidden_dims=())
    with pytest.raises(ValueError, match="param_dims"):
        LinearAutoregressiveNN(3, [2, 2])


def test_without_a_compiler_a_warning_and_the_pytorch_code(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_load_failed", False)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setenv("PYRO_OVERPARAM_FLOWS_CACHE", str(tmp_path))
    x = torch.randn(3, 2)
    with pytest.warns(native.NativeKernelWarning, match="no C compiler"):
        assert not native.usable(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert not native.native_available()
        transform = pof.unconstrained_monotone_autoregressive(2, 8)
        assert torch.isfinite(transform.log_abs_det_jacobian(x, transform(x))).all()


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PYRO_OVERPARAM_FLOWS_CACHE", str(tmp_path))
    first = native._build()
    assert first.parent == tmp_path and first.exists()
    stamp = first.stat().st_mtime_ns
    assert native._build() == first and first.stat().st_mtime_ns == stamp


def test_other_devices_and_dtypes_take_the_pytorch_code(device):
    x = torch.zeros(2, 3, device=device)
    assert native.usable(x) == (device.type == "cpu")
    assert not native.usable(x.half())
    assert not native.usable(x.double(), x)  # mixed dtypes
    with pytest.raises(ValueError, match="True or False"):
        native.use_native("yes")


@pytest.mark.parametrize("activation", list(native.SATURATING_KINDS))
def test_saturating_gradients_where_sigma_prime_leaves_float32s_normal_range(activation):
    # every unit at u = 50 (tanh) or 100 (sigmoid): sigma'(u) ~ 1e-43, a float32 subnormal
    u = 50.0 if activation == "tanh" else 100.0

    def gradients(dtype):
        x = torch.full((3, 1), u, dtype=dtype, requires_grad=True)
        log_w = torch.zeros(1, 4, dtype=dtype, requires_grad=True)
        log_a = torch.tensor([[0.0, 0.1, 0.2, 0.3]], dtype=dtype, requires_grad=True)
        b = torch.zeros(1, 4, dtype=dtype, requires_grad=True)
        _, log_slope = native.saturating(x, log_w.exp(), b, log_a.exp(), log_w, log_a, 1.0,
                                         activation)  # fmt: skip
        assert torch.isfinite(log_slope).all()
        return torch.autograd.grad(log_slope.sum(), (x, log_w, log_a, b))

    single, double = gradients(torch.float32), gradients(torch.float64)
    for ours, reference in zip(single, double, strict=True):
        assert torch.allclose(ours.double(), reference, rtol=1e-5, atol=1e-6)


def test_an_autoregressive_network_of_the_wrong_shape_is_named():
    transform = pof.unconstrained_monotone_autoregressive(3, 4, hidden_dims=())
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 6\) \(numbers per dimension last\)"):
        transform.arn.forward = lambda x: torch.zeros(x.shape[0], 6, 3)
        transform(torch.zeros(2, 3))
    transform = pof.unconstrained_monotone_autoregressive(3, 4, hidden_dims=[8])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 6, 3\) \(numbers per dimension, input"):
        transform.arn.forward = lambda x: torch.zeros(x.shape[0], 3, 6)
        transform(torch.zeros(2, 3))
