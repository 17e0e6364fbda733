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
from .numerics import integrate_one_hidden_layer, native, relu_integral

__all__ = [
    "MIN_SLOPE",
    "ConstrainedNetwork",
    "UnconstrainedNetwork",
    "constrained_log_derivative",
    "constrained_map",
    "constrained_map_and_log_derivative",
    "constrained_map_and_slope",
    "constrained_range",
    "network_output",
    "unconstrained_log_derivative",
    "unconstrained_map",
    "unconstrained_map_and_log_derivative",
]


#: The smallest slope a tail allows: the constrained tail is ``MIN_SLOPE + softplus(raw)`` and
#: the unconstrained one ``f' = s + (1 - s) phi(N)`` with ``s = MIN_SLOPE``. Positive by
#: construction, far above underflow, so a flow with a tail maps onto the real line.
MIN_SLOPE = 1e-3


class ConstrainedNetwork(NamedTuple):
    r"""Positive w, a (with their logs), free b, tail s >= MIN_SLOPE (or None), offset beta, c:
    the parameters of :math:`f(x) = c \sum_r a_r\,\sigma(w_r x + b_r) + s x + \beta`.

    >>> from pyro_overparam_flows import constrained_monotone
    >>> net = constrained_monotone(3, width=8).network()
    >>> tuple(net.hidden_weight.shape), tuple(net.tail.shape), tuple(net.offset.shape)
    ((3, 8), (3,), (3,))
    >>> torch.allclose(net.log_hidden_weight.exp(), net.hidden_weight)
    True
    """

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
    r"""Free w, b, a of the integrand network N, offset beta, c, and the tail's share s of the
    slope (a number in (0, 1), or None for the paper's model without a tail): the parameters of
    :math:`f(x) = \beta + \int_0^x \phi(N(t))\,dt`, :math:`N(t) = c \sum_r a_r\,\rho(w_r t +
    b_r)`.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> net = unconstrained_monotone(3, width=8).network()
    >>> tuple(net.hidden_weight.shape), tuple(net.offset.shape), net.tail
    ((3, 8), (3,), 0.001)
    """

    hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor
    output_weight: torch.Tensor
    offset: torch.Tensor
    multiplier: float
    tail: float | None = None
    #: The (nodes, weights) rule the map integrates with; None for the exact ReLU integral.
    quadrature: tuple[torch.Tensor, torch.Tensor] | None = None


def _pre_activation(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) * w + b


def _native_saturating(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The saturating part and its log-slope from one pass of the native kernel
    (:mod:`~pyro_overparam_flows.numerics.native`), or None where it does not apply. Its gain
    is the fused backward pass: without gradients (the inverse's Newton steps) PyTorch's
    vectorized activations are as fast, and they run."""
    tensors = (
        x,
        net.hidden_weight,
        net.hidden_bias,
        net.output_weight,
        net.log_hidden_weight,
        net.log_output_weight,
    )
    if sigma.name not in native.SATURATING_KINDS or not native.usable(*tensors):
        return None
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return None
    return native.saturating(*tensors, net.multiplier, sigma.name)


def constrained_map(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> torch.Tensor:
    r"""f(x) of the constrained family,
    :math:`f(x) = c \sum_r a_r\,\sigma(w_r x + b_r) + s x + \beta` (no :math:`s x` without a
    tail).

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(2, width=8)
    >>> x = torch.randn(5, 2)
    >>> y = constrained_map(x, transform.network(), transform.activation)
    >>> torch.allclose(y, transform(x))
    True
    """
    computed = _native_saturating(x, net, sigma)
    if computed is None:
        u = _pre_activation(x, net.hidden_weight, net.hidden_bias)
        y = net.multiplier * (sigma.fn(u) * net.output_weight).sum(-1) + net.offset
    else:
        y = computed[0] + net.offset
    return y if net.tail is None else y + net.tail * x


def constrained_map_and_slope(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""f(x) and f'(x) of the constrained family from one pre-activation, for the inverse's
    Newton steps (log-Jacobians use :func:`constrained_log_derivative`, finite where f'
    underflows): :math:`f'(x) = c \sum_r a_r w_r\,\sigma'(w_r x + b_r) + s`.

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(2, width=8)
    >>> x = torch.randn(5, 2, requires_grad=True)
    >>> y, slope = constrained_map_and_slope(x, transform.network(), transform.activation)
    >>> torch.allclose(slope, torch.autograd.grad(y.sum(), x)[0])
    True
    """
    computed = _native_saturating(x, net, sigma)
    if computed is None:
        u = _pre_activation(x, net.hidden_weight, net.hidden_bias)
        y = net.multiplier * (sigma.fn(u) * net.output_weight).sum(-1) + net.offset
        weights = net.output_weight * net.hidden_weight
        slope = net.multiplier * (sigma.derivative(u) * weights).sum(-1)
    else:
        y, slope = computed[0] + net.offset, computed[1].exp()
    if net.tail is None:
        return y, slope
    return y + net.tail * x, slope + net.tail


def constrained_log_derivative(
    x: torch.Tensor, net: ConstrainedNetwork, sigma: SaturatingActivation
) -> torch.Tensor:
    r"""log f'(x) of the constrained family, in log space:
    :math:`\log f'(x) = \log\big(c \sum_r a_r w_r\,\sigma'(w_r x + b_r) + s\big)` as a
    ``logsumexp`` of :math:`\log a_r + \log w_r + \log \sigma'(w_r x + b_r)` (and
    :math:`\log s`), finite where :math:`\sigma'` underflows.

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(2, width=8)
    >>> net, sigma = transform.network(), transform.activation
    >>> x = torch.randn(5, 2)
    >>> _, slope = constrained_map_and_slope(x, net, sigma)
    >>> torch.allclose(constrained_log_derivative(x, net, sigma).exp(), slope)
    True
    """
    computed = _native_saturating(x, net, sigma)
    if computed is None:
        u = _pre_activation(x, net.hidden_weight, net.hidden_bias)
        terms = net.log_output_weight + net.log_hidden_weight + sigma.log_derivative(u)
        log_slope = torch.logsumexp(terms, -1) + math.log(net.multiplier)
    else:
        log_slope = computed[1]
    return log_slope if net.log_tail is None else torch.logaddexp(log_slope, net.log_tail)


def constrained_map_and_log_derivative(
    x: torch.Tensor,
    net: ConstrainedNetwork,
    sigma: SaturatingActivation,
    fused_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    r"""f(x) and log f'(x) of the constrained family together: from one pass of the native
    kernel where it applies (one pass back, too), else :func:`constrained_map` and
    :func:`constrained_log_derivative` (or None with ``fused_only``).

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(2, width=8)
    >>> net, sigma, x = transform.network(), transform.activation, torch.randn(5, 2)
    >>> y, log_slope = constrained_map_and_log_derivative(x, net, sigma)
    >>> torch.allclose(y, constrained_map(x, net, sigma))
    True
    >>> torch.allclose(log_slope, constrained_log_derivative(x, net, sigma))
    True
    """
    computed = _native_saturating(x, net, sigma)
    if computed is None:
        if fused_only:
            return None
        return constrained_map(x, net, sigma), constrained_log_derivative(x, net, sigma)
    y, log_slope = computed[0] + net.offset, computed[1]
    if net.tail is None:
        return y, log_slope
    return y + net.tail * x, torch.logaddexp(log_slope, net.log_tail)


def constrained_range(
    net: ConstrainedNetwork, sigma: SaturatingActivation
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Bounds of the saturating part plus offset: f(x) - s x lies between them for every x,
    :math:`\beta + c \sum_r a_r \cdot (\sigma(-\infty), \sigma(\infty))`; without a tail,
    the image of f.

    >>> from pyro_overparam_flows import constrained_monotone
    >>> _ = torch.manual_seed(0)
    >>> transform = constrained_monotone(1, width=8, tail=False)
    >>> low, high = constrained_range(transform.network(), transform.activation)
    >>> y = transform(torch.tensor([[-1e6], [0.0], [1e6]]))
    >>> torch.allclose(y[0], low), bool(low < y[1] < high), torch.allclose(y[2], high)
    (True, True, True)
    """
    mass = net.multiplier * net.output_weight.sum(-1)
    return net.offset + sigma.lower * mass, net.offset + sigma.upper * mass


def network_output(
    t: torch.Tensor, net: UnconstrainedNetwork, rho: HiddenActivation
) -> torch.Tensor:
    r"""N(t), the integrand network's output, :math:`N(t) = c \sum_r a_r\,\rho(w_r t + b_r)`.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(2, width=8)
    >>> n = network_output(torch.randn(5, 2), transform.network(), transform.activation)
    >>> tuple(n.shape), bool(n.abs().max() < 1e-6)  # paired units cancel at initialization
    ((5, 2), True)
    """
    w, b, a = net.hidden_weight, net.hidden_bias, net.output_weight
    if rho.name == "relu" and native.usable(t, w, b, a):
        return native.relu_network(t, w, b, a, net.multiplier)
    return net.multiplier * (rho.fn(_pre_activation(t, w, b)) * a).sum(-1)


def unconstrained_map(
    x: torch.Tensor,
    net: UnconstrainedNetwork,
    rho: HiddenActivation,
    phi: PositiveFunction,
    quadrature: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    r"""f(x) of the unconstrained family: exact for ReLU (``quadrature=None``), otherwise by the
    given ``(nodes, weights)`` rule;
    :math:`f(x) = \beta + \int_0^x \phi(N(t))\,dt`, or with a tail s,
    :math:`f(x) = \beta + s x + (1 - s) \int_0^x \phi(N(t))\,dt`.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> from pyro_overparam_flows.numerics import quadrature_rule
    >>> _ = torch.manual_seed(0)
    >>> transform = unconstrained_monotone(1, width=8)
    >>> net = transform.network()._replace(output_weight=torch.randn(1, 8) / 4)
    >>> rho, phi, x = transform.activation, transform.phi, torch.linspace(-2, 2, 5)[:, None]
    >>> exact = unconstrained_map(x, net, rho, phi, None)
    >>> rule = quadrature_rule("gauss-legendre", 64, dtype=x.dtype)
    >>> torch.allclose(exact, unconstrained_map(x, net, rho, phi, rule), atol=1e-3)
    True
    """
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
    r""":math:`\log f'(x) = \log \phi(N(x))`, or :math:`\log(s + (1 - s)\,\phi(N(x)))` with a
    tail; exact whatever the integration rule.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(2, width=8)
    >>> net, rho, phi = transform.network(), transform.activation, transform.phi
    >>> x = torch.randn(5, 2, requires_grad=True)
    >>> y = unconstrained_map(x, net, rho, phi, None)
    >>> slope = torch.autograd.grad(y.sum(), x)[0]
    >>> torch.allclose(unconstrained_log_derivative(x, net, rho, phi).exp(), slope)
    True
    """
    return _log_slope_of_network(network_output(x, net, rho), net, phi)


def _log_slope_of_network(
    n: torch.Tensor, net: UnconstrainedNetwork, phi: PositiveFunction
) -> torch.Tensor:
    """log f' given N(x): log phi(N), or log(s + (1 - s) phi(N)) with a tail."""
    log_phi = phi.log(n)
    if net.tail is None:
        return log_phi
    # logaddexp(log(1 - s) + log phi, log s) without allocating the constant.
    scaled, floor = log_phi + math.log1p(-net.tail), math.log(net.tail)
    return torch.clamp(scaled, min=floor) + torch.log1p(torch.exp(-(scaled - floor).abs()))


def unconstrained_map_and_log_derivative(
    x: torch.Tensor, net: UnconstrainedNetwork, rho: HiddenActivation, phi: PositiveFunction
) -> tuple[torch.Tensor, torch.Tensor] | None:
    r"""f(x) and log f'(x) of the unconstrained family from one pass of the native kernel
    (:mod:`~pyro_overparam_flows.numerics.native`), which gives N(x) beside the exact integral,
    with one pass back; None where that kernel does not apply (then use
    :func:`unconstrained_map` and :func:`unconstrained_log_derivative`). It applies to the
    exact integral (ReLU, phi = ELU + 1) with weights that vary over the batch (a conditioner's
    hidden biases), on the CPU.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(2, width=8)
    >>> net, rho, phi = transform.network(), transform.activation, transform.phi
    >>> x = torch.randn(5, 2)
    >>> net = net._replace(hidden_bias=net.hidden_bias.expand(5, 2, 8))  # one row per sample
    >>> both = unconstrained_map_and_log_derivative(x, net, rho, phi)
    >>> both is None or torch.allclose(both[0], unconstrained_map(x, net, rho, phi, None))
    True
    >>> both is None or torch.allclose(both[1], unconstrained_log_derivative(x, net, rho, phi))
    True
    """
    w, b, a = net.hidden_weight, net.hidden_bias, net.output_weight
    if (
        net.quadrature is not None
        or rho.name != "relu"
        or phi.name != "elu_plus_one"
        or all(t.dim() == 2 for t in (w, b, a))
        or not native.usable(x, w, b, a)
        or not bool(torch.isfinite(x).all())
    ):
        return None
    integral, n = native.relu_integral_and_network(x, w, b, a, net.multiplier)
    log_slope = _log_slope_of_network(n, net, phi)
    if net.tail is None:
        return net.offset + integral, log_slope
    return net.offset + net.tail * x + (1.0 - net.tail) * integral, log_slope
