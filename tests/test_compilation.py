"""The compiled (torch.compile) exact ReLU integral against the eager one and independent
references, its modes, and its fall-back to eager when compiling fails. The native kernels
(which the flows use on the CPU by default) are off here: this is the PyTorch code, the path on
other devices and where no C compiler is found."""

from __future__ import annotations

import warnings

import pyro.distributions as dist
import pytest
import torch

from pyro_overparam_flows import unconstrained_monotone_autoregressive
from pyro_overparam_flows.numerics import compilation, native, piecewise, relu_integral
from pyro_overparam_flows.numerics.compilation import (
    AUTO_MIN_ELEMENTS,
    AUTO_PAYBACK_SECONDS,
    CompilationNotice,
    FusedKernel,
    compile_mode,
    set_compile_mode,
)

from helpers import random_network, split_reference


@pytest.fixture(autouse=True)
def pytorch_code():
    previous = native.use_native(False)
    yield
    native.use_native(previous)


@pytest.fixture
def mode():
    """Run the test body under a chosen compile mode, restoring the previous one after, and
    check that the kernel really compiled (a failure would leave eager compared with eager)."""
    previous = compile_mode()
    yield set_compile_mode
    set_compile_mode(previous)
    assert not piecewise._ROW_BLOCK.failed, "the exact integral's kernel failed to compile"


def stress_rows(dtype, seed=0):
    """Per-row networks with slopes from 1e-9 to 1e2, queries on both sides of 0 and a unit
    whose breakpoint sits 1e-7 from each query (pieces of length ~1e-7)."""
    w, b, a = random_network(12, batch=(64,), dim=2, seed=seed)
    w = w * torch.logspace(-9, 2, 12, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed + 1)
    x = 4 * torch.randn(64, 2, generator=generator, dtype=torch.float64)
    x[0, 0] = 0.0
    b[..., 5] = -w[..., 5] * (x + 1e-7)
    return [v.to(dtype) for v in (x, w, b, a)]


def value_and_gradients(inputs, c=0.7, phi="elu_plus_one"):
    inputs = [v.clone().requires_grad_() for v in inputs]
    value = relu_integral(*inputs, c, phi)
    value.sum().backward()
    return [value.detach(), *(v.grad for v in inputs)]


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_compiled_integral_agrees_with_a_1e12_reference(mode):
    mode("always")
    w, b, a = random_network(12, batch=(40,), dim=1, seed=21)
    w, b = 2 * w, 2 * b
    generator = torch.Generator().manual_seed(22)
    x = 5 * torch.randn(40, 1, generator=generator, dtype=torch.float64)
    ours = value_and_gradients([x, w, b, a])[0].reshape(-1)
    for i, upper in enumerate(x.reshape(-1).tolist()):
        reference = split_reference(w[i], b[i], a[i], 0.7, upper)
        assert float(ours[i]) == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize(
    "dtype, phi",
    [(torch.float32, "elu_plus_one"), (torch.float64, "elu_plus_one"), (torch.float32, "softplus")],
    ids=["float32", "float64", "softplus-float32"],
)
def test_compiled_integral_and_gradients_equal_eager(mode, dtype, phi):
    inputs = stress_rows(dtype)
    mode("never")
    eager = value_and_gradients(inputs, phi=phi)
    reference = value_and_gradients([v.double() for v in inputs], phi=phi)
    mode("always")
    compiled = value_and_gradients(inputs, phi=phi)
    for ours, theirs, exact in zip(compiled, eager, reference, strict=True):
        # As close to the float64 values as eager is, to a few units of rounding.
        scale = exact.abs().max()
        eager_error = float((theirs.double() - exact).abs().max() / scale)
        compiled_error = float((ours.double() - exact).abs().max() / scale)
        assert compiled_error <= 4 * eager_error + 4 * torch.finfo(dtype).eps
        torch.testing.assert_close(ours, theirs, rtol=0, atol=8 * torch.finfo(dtype).eps * scale)


def test_compiled_integral_of_pieces_where_n_is_nearly_zero(mode):
    # N(t) = -(1e-9 t + 1e-8) on [0, 2]: the integrand is e^N ~ 1, so the integral is 2. An
    # exp - 1 in place of expm1 gives 0 for the piece's mean there in float32.
    mode("always")
    w = torch.tensor([[[1e-9, 1.0]]])
    b = torch.tensor([[[1e-8, -50.0]]])
    a = torch.tensor([[[-1.0, 1.0]]])
    x = torch.tensor([[2.0]])
    assert float(relu_integral(x, w, b, a, 1.0)) == pytest.approx(2.0, rel=1e-6)


def test_compiled_integral_gradcheck(mode):
    mode("always")
    w, b, a = random_network(6, batch=(5,), dim=2, seed=11)
    w[..., 0] = 0.0  # a unit active everywhere or never
    generator = torch.Generator().manual_seed(12)
    x = 2.5 * torch.randn(5, 2, generator=generator, dtype=torch.float64)
    x[0, 0] = 0.0
    inputs = [v.clone().requires_grad_() for v in (x, w, b, 3 * a)]
    assert torch.autograd.gradcheck(
        lambda x, w, b, a: relu_integral(x, w, b, a, 0.8), inputs, atol=1e-8
    )


def test_compiled_flow_log_prob_and_gradients_equal_eager(mode):
    torch.manual_seed(0)
    transform = unconstrained_monotone_autoregressive(4, width=8, hidden_dims=[16])
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(0.3 * torch.randn_like(p))
    base = dist.Normal(torch.zeros(4), 1.0).to_event(1)
    density = dist.TransformedDistribution(base, [transform.inv])
    x = torch.randn(256, 4)
    results = {}
    for name in ("never", "always"):
        mode(name)
        transform.zero_grad()
        loss = -density.log_prob(x.clone()).mean()
        loss.backward()
        results[name] = [loss.detach(), *(p.grad.clone() for p in transform.parameters())]
    for compiled, eager in zip(results["always"], results["never"], strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["never", "always"])
@pytest.mark.parametrize("needed", ["all", "parameters", "x"])
def test_blocks_assemble_the_single_block_result(mode, monkeypatch, name, needed):
    # 128 rows in blocks of 5 (the last one of 3) against one block, values and the gradients
    # asked for.
    mode(name)
    inputs = stress_rows(torch.float64)
    inputs = [v.reshape(-1, 1, 12) if v.dim() == 3 else v.reshape(-1, 1) for v in inputs]
    wanted = {"all": [0, 1, 2, 3], "parameters": [1, 2, 3], "x": [0]}[needed]

    def run():
        leaves = [v.clone().requires_grad_(i in wanted) for i, v in enumerate(inputs)]
        value = relu_integral(*leaves, 0.7)
        grads = torch.autograd.grad(value.sum(), [leaves[i] for i in wanted])
        return [value.detach(), *grads]

    whole = run()
    monkeypatch.setattr(piecewise, "_ROW_BLOCK_ELEMENTS", 60 // torch.get_num_threads())
    monkeypatch.setattr(piecewise, "_COMPILED_BLOCK_ELEMENTS", 60)
    for blocked, single in zip(run(), whole, strict=True):
        torch.testing.assert_close(blocked, single, rtol=4e-16, atol=0)


def test_auto_mode_compiles_large_cpu_calls_once_they_have_paid_back(mode, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(compilation.time, "perf_counter", lambda: clock[0])

    def slow(t):
        clock[0] += 10.0
        return t

    kernel = FusedKernel(slow, "slow")
    t = torch.zeros(1)
    mode("auto")
    assert not kernel.uses_compiled(t, AUTO_MIN_ELEMENTS - 1)  # small calls: not even counted
    kernel(t, compiled=False)
    assert kernel.eager_seconds == 0.0
    for _ in range(3):  # large calls: eager until they have taken AUTO_PAYBACK_SECONDS
        assert not kernel.uses_compiled(t, AUTO_MIN_ELEMENTS)
        kernel(t, compiled=False)
    assert kernel.eager_seconds == AUTO_PAYBACK_SECONDS == 30.0
    assert kernel.uses_compiled(t, AUTO_MIN_ELEMENTS)
    assert not kernel.uses_compiled(t, AUTO_MIN_ELEMENTS - 1)
    assert not kernel.uses_compiled(t.to("meta"), AUTO_MIN_ELEMENTS)  # CPU only
    mode("always")
    assert kernel.uses_compiled(t, 1)
    mode("never")
    assert not kernel.uses_compiled(t, AUTO_MIN_ELEMENTS)


def test_the_first_large_call_of_a_process_does_not_compile(mode, monkeypatch):
    # A log_prob at B = 4096, d = 8, width 16 used to compile for 7-22 s in a fresh process.
    kernel = FusedKernel(piecewise._row_block, "exact ReLU integral")
    monkeypatch.setattr(piecewise, "_ROW_BLOCK", kernel)
    mode("auto")
    flow = unconstrained_monotone_autoregressive(8, width=16)
    base = dist.Normal(torch.zeros(8), torch.ones(8)).to_event(1)
    density = dist.TransformedDistribution(base, [flow.inv])
    density.log_prob(torch.randn(4096, 8)).mean().backward()
    assert kernel._compiled is None and 0.0 < kernel.eager_seconds < AUTO_PAYBACK_SECONDS


def test_compiling_is_announced_once(mode, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    kernel = FusedKernel(lambda t: t + 1, "plus one")
    mode("always")
    t = torch.zeros(1)
    with pytest.warns(CompilationNotice, match="compiling the plus one kernel"):
        assert float(kernel(t, compiled=kernel.uses_compiled(t, 1))) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel(t, compiled=True)


def _failing_call(fn, **options):
    def compiled(*args):
        raise RuntimeError("no C++ compiler found\nsecond line")

    return compiled


def _unsupported(fn, **options):
    raise RuntimeError("torch.compile is not supported on this Python")


@pytest.mark.parametrize("broken_compile", [_failing_call, _unsupported])
def test_a_kernel_that_fails_to_compile_warns_once_and_runs_eagerly(
    mode, monkeypatch, broken_compile
):
    monkeypatch.setattr(torch, "compile", broken_compile)
    kernel = FusedKernel(piecewise._row_block, "exact ReLU integral")
    monkeypatch.setattr(piecewise, "_ROW_BLOCK", kernel)
    mode("always")
    inputs = stress_rows(torch.float64)
    with pytest.warns(RuntimeWarning, match="could not run the exact ReLU integral kernel"):
        fallback = value_and_gradients(inputs)
    assert kernel.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value_and_gradients(inputs)  # no second warning
    mode("never")
    for ours, eager in zip(fallback, value_and_gradients(inputs), strict=True):
        torch.testing.assert_close(ours, eager, rtol=0, atol=0)


def test_a_genuine_error_is_raised_and_leaves_compiling_on(mode):
    def kernel_body(t):
        raise ValueError("a bug in the kernel")

    kernel = FusedKernel(kernel_body, "faulty")
    kernel._compiled = kernel_body  # as if compiled: the same error
    with pytest.raises(ValueError, match="a bug in the kernel"):
        kernel(torch.zeros(1), compiled=True)
    assert not kernel.failed


def test_unknown_modes_are_refused(mode, monkeypatch):
    with pytest.raises(ValueError, match="unknown compile mode 'sometimes'; allowed values"):
        set_compile_mode("sometimes")
    monkeypatch.setenv("PYRO_OVERPARAM_FLOWS_COMPILE", "Never")
    assert compilation._mode_from_environment() == "never"
    monkeypatch.setenv("PYRO_OVERPARAM_FLOWS_COMPILE", "fast")
    with pytest.warns(UserWarning, match="PYRO_OVERPARAM_FLOWS_COMPILE='fast' is not one of"):
        assert compilation._mode_from_environment() == "auto"
