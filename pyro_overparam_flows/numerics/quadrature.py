r"""Fixed-node quadrature of :math:`\int_0^x \phi(N(t))\,dt` for a one-hidden-layer network N.

With nodes :math:`s_k \in [0, 1]` and weights :math:`\omega_k`,

.. math::

    \int_0^x \phi(N(t))\,dt \approx x \sum_k \omega_k\, \phi(N(x s_k)), \qquad
    N(t) = c \sum_r a_r\, \rho(w_r t + b_r).

The backward pass recomputes the K x m hidden activations node by node instead of storing them,
so the memory kept for backward is O(batch x m) whatever K is (design.md section 2.2). It returns
the exact derivative of the discretized integral (not phi(N(x))), so ``gradcheck`` holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..activations import HiddenActivation, PositiveFunction

__all__ = ["QUADRATURE_RULES", "integrate_one_hidden_layer", "quadrature_rule"]

# Elements of one (nodes x batch x dim x width) block; bounds the working set of a chunk.
_CHUNK_ELEMENTS = 1 << 21


def _gauss_legendre(count: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(count)
    return (t + 1.0) / 2.0, w / 2.0


def _clenshaw_curtis(count: int) -> tuple[np.ndarray, np.ndarray]:
    # count = n + 1 Chebyshev extreme points cos(j pi / n); weights from the cosine series of
    # the interpolating polynomial (Clenshaw & Curtis 1960).
    if count < 2:
        raise ValueError(f"quadrature_nodes must be >= 2 for clenshaw-curtis, got {count}")
    n = count - 1
    j = np.arange(count)
    theta = j * np.pi / n
    weights = np.ones(count)
    for k in range(1, n // 2 + 1):
        factor = 1.0 if 2 * k == n else 2.0
        weights -= factor * np.cos(2 * k * theta) / (4 * k * k - 1)
    weights *= np.where((j == 0) | (j == n), 1.0, 2.0) / n
    nodes = np.cos(theta)
    return (1.0 - nodes) / 2.0, weights / 2.0


QUADRATURE_RULES: Mapping[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
    "gauss-legendre": _gauss_legendre,
    "clenshaw-curtis": _clenshaw_curtis,
}


def quadrature_rule(
    rule: str, count: int, *, dtype: torch.dtype = torch.float64, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of ``rule`` with ``count`` points on [0, 1], computed in float64.

    :param str rule: ``"gauss-legendre"`` or ``"clenshaw-curtis"``.
    :param int count: number of nodes K.
    :returns: ``(nodes, weights)``, each of shape ``(count,)``.

    >>> nodes, weights = quadrature_rule("gauss-legendre", 4)
    >>> float(weights.sum())
    1.0
    """
    if rule not in QUADRATURE_RULES:
        allowed = ", ".join(repr(k) for k in QUADRATURE_RULES)
        raise ValueError(f"unknown quadrature {rule!r}; allowed values are {allowed}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"quadrature_nodes must be a positive integer, got {count!r}")
    nodes, weights = QUADRATURE_RULES[rule](count)
    as_tensor = lambda v: torch.as_tensor(np.ascontiguousarray(v), dtype=dtype, device=device)  # noqa: E731
    return as_tensor(nodes), as_tensor(weights)


def _node_view(v: torch.Tensor, dims: int) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * dims)


class _OneHiddenLayerIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, a, nodes, weights, multiplier, rho, phi):
        ctx.save_for_backward(x, w, b, a, nodes, weights)
        ctx.multiplier, ctx.rho, ctx.phi = multiplier, rho, phi
        total = x.new_zeros(torch.broadcast_shapes(x.shape, w.shape[:-1], b.shape[:-1]))
        for start, stop in _chunks(x, w, b, nodes.numel()):
            s = _node_view(nodes[start:stop], x.dim())
            u = (x * s).unsqueeze(-1) * w + b
            n = multiplier * (rho.fn(u) * a).sum(-1)
            total = total + (_node_view(weights[start:stop], x.dim()) * phi.fn(n)).sum(0)
        return x * total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w, b, a, nodes, weights = ctx.saved_tensors
        c, rho, phi = ctx.multiplier, ctx.rho, ctx.phi
        need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
        shape = torch.broadcast_shapes(x.shape + (1,), w.shape, b.shape, a.shape)
        sum_phi = x.new_zeros(shape[:-1]) if need_x else None
        acc_a = x.new_zeros(shape) if need_a else None
        acc_b = x.new_zeros(shape) if need_b else None
        acc_x = x.new_zeros(shape) if (need_x or need_w) else None
        for start, stop in _chunks(x, w, b, nodes.numel()):
            s = _node_view(nodes[start:stop], x.dim())
            omega = _node_view(weights[start:stop], x.dim())
            u = (x * s).unsqueeze(-1) * w + b
            r = rho.fn(u)
            n = c * (r * a).sum(-1)
            q = (omega * c * phi.derivative(n)).unsqueeze(-1)
            if sum_phi is not None:
                sum_phi = sum_phi + (omega * phi.fn(n)).sum(0)
            if acc_a is not None:
                acc_a = acc_a + (q * r).sum(0)
            if acc_b is not None or acc_x is not None:
                dr = rho.derivative(u)
                if acc_b is not None:
                    acc_b = acc_b + (q * dr).sum(0)
                if acc_x is not None:
                    acc_x = acc_x + (q * s.unsqueeze(-1) * dr).sum(0)
        gx = (grad * x).unsqueeze(-1)
        grad_x = grad_w = grad_b = grad_a = None
        if need_a:
            grad_a = (gx * acc_a).sum_to_size(a.shape)
        if need_b:
            grad_b = (gx * a * acc_b).sum_to_size(b.shape)
        if need_w:
            grad_w = (gx * a * x.unsqueeze(-1) * acc_x).sum_to_size(w.shape)
        if need_x:
            inner = (a * w * acc_x).sum(-1)
            grad_x = (grad * (sum_phi + x * inner)).sum_to_size(x.shape)
        return grad_x, grad_w, grad_b, grad_a, None, None, None, None, None


def _chunks(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, count: int):
    per_node = math.prod(torch.broadcast_shapes(x.shape + (1,), w.shape, b.shape))
    size = max(1, _CHUNK_ELEMENTS // max(per_node, 1))
    for start in range(0, count, size):
        yield start, min(start + size, count)


def integrate_one_hidden_layer(
    x: torch.Tensor,
    hidden_weight: torch.Tensor,
    hidden_bias: torch.Tensor,
    output_weight: torch.Tensor,
    multiplier: float,
    activation: HiddenActivation,
    phi: PositiveFunction,
    nodes: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    r"""Quadrature of :math:`\int_0^x \phi\big(c \sum_r a_r \rho(w_r t + b_r)\big)\,dt`.

    :param torch.Tensor x: upper limits, shape ``(*batch, D)``.
    :param torch.Tensor hidden_weight: w, shape ``(D, m)`` or ``(*batch, D, m)``; likewise
        ``hidden_bias`` (b) and ``output_weight`` (a).
    :param float multiplier: the output multiplier c.
    :param activation: rho, from :data:`~pyro_overparam_flows.activations.HIDDEN`.
    :param phi: phi, from :data:`~pyro_overparam_flows.activations.POSITIVE`.
    :param torch.Tensor nodes: nodes on [0, 1], from :func:`quadrature_rule`.
    :param torch.Tensor weights: the matching weights.
    :returns: the integrals, shape ``(*batch, D)``.

    >>> from pyro_overparam_flows.activations import HIDDEN, POSITIVE
    >>> nodes, weights = quadrature_rule("gauss-legendre", 8)
    >>> zeros = torch.zeros(1, 4, dtype=torch.float64)
    >>> x = torch.tensor([[2.0]], dtype=torch.float64)
    >>> integrate_one_hidden_layer(x, zeros, zeros, zeros, 1.0, HIDDEN["tanh"],
    ...                            POSITIVE["elu_plus_one"], nodes, weights)
    tensor([[2.]], dtype=torch.float64)
    """
    shape = torch.broadcast_shapes(
        x.shape, hidden_weight.shape[:-1], hidden_bias.shape[:-1], output_weight.shape[:-1]
    )
    return _OneHiddenLayerIntegral.apply(
        x.expand(shape),
        hidden_weight,
        hidden_bias,
        output_weight,
        nodes.to(x.dtype),
        weights.to(x.dtype),
        multiplier,
        activation,
        phi,
    )
