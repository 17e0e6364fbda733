r"""Fixed-node quadrature of :math:`\int_0^x \phi(N(t))\,dt` for a one-hidden-layer network N.

With nodes :math:`s_k \in [0, 1]` and weights :math:`\omega_k`,

.. math::

    \int_0^x \phi(N(t))\,dt \approx x \sum_k \omega_k\, \phi(N(x s_k)), \qquad
    N(t) = c \sum_r a_r\, \rho(w_r t + b_r).

Rows are evaluated in blocks (on the CPU small enough to stay in cache), the sums over the m units
and over the K nodes as matrix products. When gradients are wanted the same pass accumulates the
three (rows x m) sums over the nodes that the gradients need (one of them through rho' written
in terms of rho(u) where it can be), so the memory kept for backward is O(batch x m) whatever K
is and the backward pass evaluates nothing again. It returns the exact
derivative of the discretized integral (not phi(N(x))), so ``gradcheck`` holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..activations import HiddenActivation, PositiveFunction
from ..validation import check_choice, check_positive_int

__all__ = ["QUADRATURE_RULES", "integrate_one_hidden_layer", "quadrature_rule"]

# Elements of one (rows x nodes x width) block of hidden activations: per thread on the CPU, a
# working set that stays in cache; on an accelerator, a bound on the temporaries' memory.
_BLOCK = 1 << 16
_DEVICE_BLOCK = 1 << 24


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


#: The fixed-node rules by name, each a function of K giving K nodes and weights on [0, 1]:
#: ``"gauss-legendre"`` and ``"clenshaw-curtis"`` (see :func:`quadrature_rule`).
#:
#: :meta hide-value:
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
    check_choice(rule, QUADRATURE_RULES, "quadrature")
    check_positive_int(count, "quadrature_nodes")
    nodes, weights = QUADRATURE_RULES[rule](count)
    as_tensor = lambda v: torch.as_tensor(np.ascontiguousarray(v), dtype=dtype, device=device)  # noqa: E731
    return as_tensor(nodes), as_tensor(weights)


class _OneHiddenLayerIntegral(torch.autograd.Function):
    """x * sum_k omega_k phi(N(x s_k)) for rows of (x, w, b, a): x (L,), parameters (L, m).

    Rows are taken in blocks of (rows, K, m) hidden activations (on the CPU small enough to stay
    in cache; elsewhere bounded, so memory never grows with K). When gradients are wanted, the
    same pass accumulates the three (L, m) sums over the nodes the gradients need, so nothing of
    size K is kept and the backward pass is a few products."""

    @staticmethod
    def forward(ctx, x, w, b, a, nodes, weights, multiplier, rho, phi):
        need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
        c = multiplier
        length, width = w.shape
        total = x.new_empty(length)
        acc_a = torch.empty_like(w) if need_a else None
        acc_bx = w.new_empty(length, 2, width) if (need_x or need_w or need_b) else None
        block = _BLOCK * torch.get_num_threads() if x.device.type == "cpu" else _DEVICE_BLOCK
        size = max(1, block // (nodes.numel() * width))
        for start in range(0, length, size):
            rows = slice(start, start + size)
            xs = torch.outer(x[rows], nodes)  # (rows, K)
            r = torch.addcmul(b[rows, None, :], xs.unsqueeze(-1), w[rows, None, :])
            r = rho.fn(r)  # (rows, K, m)
            n = c * torch.matmul(r, a[rows].unsqueeze(-1)).squeeze(-1)
            torch.matmul(phi.fn(n), weights, out=total[rows])
            if acc_a is None and acc_bx is None:
                continue
            q = (c * weights) * phi.derivative(n)  # (rows, K)
            if acc_a is not None:
                torch.matmul(q.unsqueeze(-2), r, out=acc_a[rows].unsqueeze(-2))
            if acc_bx is not None:
                if rho.derivative_of_value is not None:
                    slope = rho.derivative_of_value(r)
                else:
                    slope = rho.derivative(
                        torch.addcmul(b[rows, None, :], xs.unsqueeze(-1), w[rows, None, :])
                    )
                torch.matmul(torch.stack([q, q * nodes], -2), slope, out=acc_bx[rows])
        # The backward pass multiplies the incoming gradient by these.
        xu = x.unsqueeze(-1)
        ctx.save_for_backward(
            total + x * (a * w * acc_bx[:, 1]).sum(-1) if need_x else None,
            xu * acc_a if need_a else None,
            xu * a * acc_bx[:, 0] if need_b else None,
            xu.square() * a * acc_bx[:, 1] if need_w else None,
        )
        return x * total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        d_x, d_a, d_b, d_w = ctx.saved_tensors
        column = grad.unsqueeze(-1)
        return (
            None if d_x is None else grad * d_x,
            None if d_w is None else column * d_w,
            None if d_b is None else column * d_b,
            None if d_a is None else column * d_a,
            None,
            None,
            None,
            None,
            None,
        )


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
    >>> y = integrate_one_hidden_layer(x, zeros, zeros, zeros, 1.0, HIDDEN["tanh"],
    ...                                POSITIVE["elu_plus_one"], nodes, weights)
    >>> y.shape, round(float(y), 12)  # N = 0, phi(0) = 1: the integral is x
    (torch.Size([1, 1]), 2.0)
    """
    if not torch.is_grad_enabled():  # a Function sees requires_grad even under no_grad
        x, hidden_weight, hidden_bias, output_weight = (
            v.detach() for v in (x, hidden_weight, hidden_bias, output_weight)
        )
    shape = torch.broadcast_shapes(
        x.shape + (1,), hidden_weight.shape, hidden_bias.shape, output_weight.shape
    )
    rows = lambda v: v.expand(shape).reshape(-1, shape[-1])  # noqa: E731
    integral = _OneHiddenLayerIntegral.apply(
        x.expand(shape[:-1]).reshape(-1),
        rows(hidden_weight),
        rows(hidden_bias),
        rows(output_weight),
        nodes.to(x.dtype),
        weights.to(x.dtype),
        multiplier,
        activation,
        phi,
    )
    return integral.reshape(shape[:-1])
