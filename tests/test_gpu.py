"""On a GPU, every forward, inverse and log-det path runs without a host synchronization.

``torch.cuda.set_sync_debug_mode("error")`` makes any operation that waits for the device
(``.item()``, ``bool(tensor)``, ``nonzero``, a copy to the host) raise. Validation is off, as it
would be in a training loop that wants speed: its checks read values back by design. The
element-wise flows' log-density, its gradient, sampling (the inverse, with and without a graph)
and the solver's fixed budget are all covered, for both families and every integration path.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_overparam_flows as pof

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

FLOWS = {
    "unconstrained relu exact": lambda d: pof.UnconstrainedMonotone(d, 16),
    "unconstrained tanh quadrature": lambda d: pof.UnconstrainedMonotone(
        d, 16, activation="tanh", phi="softplus"
    ),
    "constrained tanh": lambda d: pof.ConstrainedMonotone(d, 16),
    "unconstrained relu exact, autoregressive": lambda d: pof.unconstrained_monotone_autoregressive(
        d, 16
    ),
    "unconstrained tanh quadrature, autoregressive": lambda d: (
        pof.unconstrained_monotone_autoregressive(d, 16, activation="tanh")
    ),
    "constrained tanh, autoregressive": lambda d: pof.constrained_monotone_autoregressive(d, 16),
    "unconstrained relu exact, coupling": lambda d: pof.unconstrained_monotone_coupling(d, 16),
    "constrained tanh, coupling": lambda d: pof.constrained_monotone_coupling(d, 16),
}


@pytest.fixture
def no_sync():
    pyro.enable_validation(False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name", list(FLOWS))
def test_paths_run_without_host_synchronization(name, no_sync):
    d = 4
    torch.manual_seed(0)
    transform = FLOWS[name](d).cuda()
    base = dist.Normal(torch.zeros(d, device="cuda"), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, [transform.inv])
    x = torch.randn(256, d, device="cuda")

    loss = -flow.log_prob(x.clone()).mean()  # forward map and log-det
    loss.backward()  # and their custom backward passes
    with torch.no_grad():
        sample = flow.sample((256,))  # the inverse: bracketing and Newton, fixed budgets
    z = torch.randn(256, d, device="cuda", requires_grad=True)
    drawn = transform.inv(z)  # the inverse with its implicit-function gradient
    drawn.sum().backward()

    torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and torch.isfinite(sample).all()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(transform(drawn.detach().clone()), z.detach(), rtol=1e-4, atol=1e-4)
