r"""The scalar monotone maps of the two families, applied elementwise over the last dimension.

Parameters have shape ``(D, m)`` (one network per dimension, shared by the batch) or
``(*batch, D, m)`` (one per row, as a conditioner produces); x has shape ``(*batch, D)``.

Constrained:

.. math::

    f(x) = c \sum_r a_r\,\sigma(w_r x + b_r) + s x + \beta, \qquad
    \log f'(x) = \log\Big(c \sum_r a_r w_r \sigma'(w_r x + b_r) + s\Big),

the log computed by ``logsumexp`` over r so it stays finite where :math:`\sigma'` underflows.

Unconstrained:

.. math::

    N(t) = c \sum_r a_r\,\rho(w_r t + b_r), \qquad
    f(x) = \beta + \int_0^x \phi(N(t))\,dt, \qquad \log f'(x) = \log \phi(N(x)),

and with a tail s (the default), :math:`f'(x) = s + (1 - s)\,\phi(N(x))`: f maps onto the real
line for every parameter value, and is still the identity where N = 0 (phi(0) = 1).

Both families' tails keep the slope at or above :data:`MIN_SLOPE`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .activations import HiddenActivation, PositiveFunction, SaturatingActivation
from .numerics import integrate_one_hidden_layer, relu_integral

__all__ = [
    "MIN_SLOPE",
    "ConstrainedNetwork",
    "UnconstrainedNetwork",
    "constrained_log_derivative",
    "constrained_map",
    "constrained_map_and_slope",
    "constrained_range",
    "network_output",
    "unconstrained_log_derivative",
    "unconstrained_map",
]


#: The smallest slope a tail allows: the constrained tail is ``MIN_SLOPE + softplus(raw)`` and
#: the unconstrained one ``f' = s + (1 - s) phi(N)`` with ``s = MIN_SLOPE``. Positive by
#: construction, far above underflow, so a flow with a tail maps onto the real line.
MIN_SLOPE = 1e-3


class ConstrainedNetwork(NamedTuple):
    """Positive w, a (with their logs), free b, tail s >= MIN_SLOPE (or None), offset beta, c."""

    hidden_weight: torch.Tensor
    log_hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor
    output_weight: torch.Tensor
    log_output_weight: torch.Tensor
    tail: torch.Tensor | None
    log_tail: torch.Tensor | None
    offset: torch.Tensor
    multiplier: float


class UnconstrainedNetwork(NamedTuple):
    """Free w, b, a of the integrand network N, offset beta, c, and the tail's share s of the
    slope (a number in (0, 1), or None for the paper's model without a tail)."""

    hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor
    output_weight: torch.Tensor
    offset: torch.Tensor
    multiplier: float
    tail: float | None = None


def _pre_activation(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) * w + b


def constrained_map(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> torch.Tensor:
    """f(x) of the constrained family."""
    u = _pre_activation(x, net.hidden_weight, net.hidden_bias)
    y = net.multiplier * (sigma.fn(u) * net.output_weight).sum(-1) + net.offset
    return y if net.tail is None else y + net.tail * x


def constrained_map_and_slope(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and f'(x) of the constrained family from one pre-activation, for the inverse's
    Newton steps (log-Jacobians use :func:`constrained_log_derivative`, finite where f'
    underflows)."""
    u = _pre_activation(x, net.hidden_weight, net.hidden_bias)
    y = net.multiplier * (sigma.fn(u) * net.output_weight).sum(-1) + net.offset
    weights = net.output_weight * net.hidden_weight
    slope = net.multiplier * (sigma.derivative(u) * weights).sum(-1)
    if net.tail is None:
        return y, slope
    return y + net.tail * x, slope + net.tail


def constrained_log_derivative(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> torch.Tensor:
    """log f'(x) of the constrained family, in log space."""
    u = _pre_activation(x, net.hidden_weight, net.hidden_bias)
    terms = net.log_output_weight + net.log_hidden_weight + sigma.log_derivative(u)
    log_slope = torch.logsumexp(terms, -1) + math.log(net.multiplier)
    return log_slope if net.log_tail is None else torch.logaddexp(log_slope, net.log_tail)


def constrained_range(
    net: ConstrainedNetwork, sigma: SaturatingActivation
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of the saturating part plus offset: f(x) - s x lies between them for every x."""
    mass = net.multiplier * net.output_weight.sum(-1)
    return net.offset + sigma.lower * mass, net.offset + sigma.upper * mass


def network_output(
    t: torch.Tensor, net: UnconstrainedNetwork, rho: HiddenActivation
) -> torch.Tensor:
    """N(t), the integrand network's output."""
    u = _pre_activation(t, net.hidden_weight, net.hidden_bias)
    return net.multiplier * (rho.fn(u) * net.output_weight).sum(-1)


def unconstrained_map(
    x: torch.Tensor,
    net: UnconstrainedNetwork,
    rho: HiddenActivation,
    phi: PositiveFunction,
    quadrature: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """f(x) of the unconstrained family: exact for ReLU (``quadrature=None``), otherwise by the
    given ``(nodes, weights)`` rule."""
    w, b, a, c = net.hidden_weight, net.hidden_bias, net.output_weight, net.multiplier
    if quadrature is None:
        integral = relu_integral(x, w, b, a, c, phi.name)
    else:
        integral = integrate_one_hidden_layer(x, w, b, a, c, rho, phi, *quadrature)
    if net.tail is None:
        return net.offset + integral
    return net.offset + net.tail * x + (1.0 - net.tail) * integral


def unconstrained_log_derivative(
    x: torch.Tensor, net: UnconstrainedNetwork, rho: HiddenActivation, phi: PositiveFunction
) -> torch.Tensor:
    """log f'(x) = log phi(N(x)), or log(s + (1 - s) phi(N(x))) with a tail; exact whatever the
    integration rule."""
    log_phi = phi.log(network_output(x, net, rho))
    if net.tail is None:
        return log_phi
    # logaddexp(log(1 - s) + log phi, log s) without allocating the constant.
    scaled, floor = log_phi + math.log1p(-net.tail), math.log(net.tail)
    return torch.clamp(scaled, min=floor) + torch.log1p(torch.exp(-(scaled - floor).abs()))
