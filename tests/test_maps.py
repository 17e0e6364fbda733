"""The scalar maps' joint evaluations against their separate ones and autograd."""

from __future__ import annotations

import pytest
import torch

from pyro_overparam_flows import constrained_monotone
from pyro_overparam_flows.activations import SATURATING
from pyro_overparam_flows.maps import (
    constrained_log_derivative,
    constrained_map,
    constrained_map_and_slope,
)

from helpers import perturb_, spread


@pytest.mark.parametrize("tail", [True, False], ids=["tail", "no-tail"])
@pytest.mark.parametrize("activation", list(SATURATING))
def test_constrained_map_and_slope_equal_the_map_and_its_derivative(activation, tail):
    transform = perturb_(constrained_monotone(3, width=16, activation=activation, tail=tail))
    transform = transform.double()
    net, sigma = transform.network(), SATURATING[activation]
    x = spread(torch.float64)[4:-4].reshape(-1, 1).expand(-1, 3).clone().requires_grad_()
    value, slope = constrained_map_and_slope(x, net, sigma)
    torch.testing.assert_close(value, constrained_map(x, net, sigma), rtol=0, atol=1e-14)
    (autograd,) = torch.autograd.grad(constrained_map(x, net, sigma).sum(), x)
    exact = torch.exp(constrained_log_derivative(x, net, sigma))  # log space
    torch.testing.assert_close(slope, exact, rtol=1e-12, atol=0)
    # Autograd's 1 - tanh^2 (or s (1 - s)) cancels where units saturate: relative agreement
    # where the slope is not far below its largest value.
    floor = 1e-14 * float(exact.detach().max())
    torch.testing.assert_close(slope, autograd, rtol=1e-12, atol=floor)
