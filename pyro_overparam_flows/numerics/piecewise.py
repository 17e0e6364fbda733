r"""Exact :math:`\int_0^x \phi(N(t))\,dt` for a ReLU network N and :math:`\phi = \mathrm{ELU} + 1`.

With :math:`\rho = \mathrm{ReLU}`, :math:`N(t) = c \sum_r a_r\,\mathrm{relu}(w_r t + b_r)` is
piecewise linear with breakpoints :math:`\tau_r = -b_r / w_r` (design.md section 2.2.1). On the
piece between consecutive sorted breakpoints, :math:`N(t) = \alpha_j t + \gamma_j`, and

.. math::

    \int_{l}^{h} \phi(\alpha t + \gamma)\,dt = (h - l)\, \Phi[\alpha l + \gamma, \alpha h + \gamma],

the divided difference of the antiderivative :math:`\Phi(u) = e^u` (u <= 0),
:math:`u^2/2 + u + 1` (u > 0), evaluated in a form without cancellation. Crossing the breakpoint
of unit r adds :math:`c a_r |w_r|` to the slope and :math:`c a_r b_r \operatorname{sign}(w_r)` to
the intercept, so all pieces come from one sort and two cumulative sums. Pieces are accumulated
outwards from 0 (positive and negative half-lines separately) so every partial sum adds positive
terms only: no cancellation between far-away pieces.
"""

from __future__ import annotations

import torch

__all__ = ["elu_plus_one_mean", "relu_elu_integral"]

# Below this gap, (1 - e^-d)/d is replaced by its Taylor series (error d^5/720 < 2e-18).
_TAYLOR_GAP = 1e-3


def elu_plus_one_mean(u0: torch.Tensor, u1: torch.Tensor) -> torch.Tensor:
    r"""Mean of :math:`\phi(u) = \mathrm{ELU}(u) + 1` over the interval between u0 and u1.

    Equals :math:`(\Phi(u_1) - \Phi(u_0)) / (u_1 - u_0)`, and :math:`\phi(u_0)` when they meet.

    >>> float(elu_plus_one_mean(torch.tensor(1.0), torch.tensor(3.0)))
    3.0
    """
    lo = torch.minimum(u0, u1)
    hi = torch.maximum(u0, u1)
    gap = hi - lo
    # Both <= 0: e^hi (1 - e^-gap) / gap, written so that nothing overflows.
    small = gap < _TAYLOR_GAP
    safe_gap = torch.where(small, torch.ones_like(gap), gap)
    series = 1.0 - gap / 2.0 + gap.square() / 6.0 - gap.pow(3) / 24.0 + gap.pow(4) / 120.0
    ratio = torch.where(small, series, -torch.expm1(-safe_gap) / safe_gap)
    negative = torch.exp(torch.clamp(hi, max=0.0)) * ratio
    # Both > 0: the mean of u + 1 is the midpoint plus one.
    positive = (lo + hi) / 2.0 + 1.0
    # lo <= 0 < hi: (hi^2 / 2 + hi - expm1(lo)) / gap, a sum of non-negative terms over gap > 0.
    straddle = hi > 0
    safe_hi = torch.clamp(hi, min=0.0)
    mixed_gap = torch.where(straddle & (lo <= 0), gap, torch.ones_like(gap))
    mixed = (safe_hi.square() / 2.0 + safe_hi - torch.expm1(torch.clamp(lo, max=0.0))) / mixed_gap
    return torch.where(lo > 0, positive, torch.where(straddle, mixed, negative))


def _piece(lo, hi, slope, intercept):
    return (hi - lo) * elu_plus_one_mean(slope * lo + intercept, slope * hi + intercept)


def _breakpoint_limit(dtype: torch.dtype) -> float:
    # Breakpoints are clipped to +-limit so that piece lengths, u and u^2 stay finite.
    return float(torch.finfo(dtype).max) ** 0.25


def _rows(x, w, b, a):
    """Lay out x as (L, n) query rows against (L, m) parameter rows."""
    if w.dim() == 2 and b.dim() == 2 and a.dim() == 2:
        dim = x.shape[-1]
        rows = x.reshape(-1, dim).transpose(0, 1)
        return rows, w, b, a, lambda out: out.transpose(0, 1).reshape(x.shape)
    shape = torch.broadcast_shapes(x.shape + (1,), w.shape, b.shape, a.shape)
    width = shape[-1]
    expand = lambda p: p.expand(shape).reshape(-1, width)  # noqa: E731
    rows = x.expand(shape[:-1]).reshape(-1, 1)
    return rows, expand(w), expand(b), expand(a), lambda out: out.reshape(shape[:-1])


def relu_elu_integral(
    x: torch.Tensor,
    hidden_weight: torch.Tensor,
    hidden_bias: torch.Tensor,
    output_weight: torch.Tensor,
    multiplier: float,
) -> torch.Tensor:
    r"""Exact :math:`\int_0^x \phi(N(t))\,dt` for ReLU units and :math:`\phi = \mathrm{ELU} + 1`.

    :param torch.Tensor x: upper limits, shape ``(*batch, D)``.
    :param torch.Tensor hidden_weight: w, shape ``(D, m)`` (shared by the batch, sorted once per
        call) or ``(*batch, D, m)`` (one sort per row); likewise ``hidden_bias`` and
        ``output_weight``.
    :param float multiplier: the output multiplier c.
    :returns: the integrals, shape ``(*batch, D)``; differentiable in every argument.

    >>> w = torch.tensor([[1.0]], dtype=torch.float64)
    >>> zero = torch.zeros(1, 1, dtype=torch.float64)
    >>> # N(t) = relu(t): integral of t + 1 over [0, 2] is 4
    >>> relu_elu_integral(torch.tensor([[2.0]], dtype=torch.float64), w, zero, w, 1.0)
    tensor([[4.]], dtype=torch.float64)
    """
    rows, w, b, a, restore = _rows(x, hidden_weight, hidden_bias, output_weight)
    c = multiplier
    limit = _breakpoint_limit(x.dtype)
    nonzero = w != 0
    # The integral does not depend on where a breakpoint sits to first order (N is continuous
    # there), so breakpoints carry no gradient; slopes and intercepts carry all of it.
    with torch.no_grad():
        tau = torch.where(nonzero, -b / torch.where(nonzero, w, torch.ones_like(w)), 0.0)
        tau, order = torch.sort(tau.clamp(-limit, limit), dim=-1)
    slope_step = (c * a * w.abs()).gather(-1, order)
    intercept_step = (c * a * b * torch.sign(w)).gather(-1, order)
    left_active = w < 0
    # A unit with w = 0 and b > 0 is active everywhere: its slope term is 0 in value but carries
    # the gradient with respect to w.
    always_active = ~nonzero & (b > 0)
    slope0 = c * (a * w * (left_active | always_active)).sum(-1, keepdim=True)
    intercept0 = c * (a * (b * left_active + torch.relu(b) * ~nonzero)).sum(-1, keepdim=True)
    slope = torch.cat([slope0, slope0 + torch.cumsum(slope_step, -1)], -1)
    intercept = torch.cat([intercept0, intercept0 + torch.cumsum(intercept_step, -1)], -1)

    zero = tau.new_zeros(tau.shape[:-1] + (1,))
    left = torch.cat([zero, tau.clamp(min=0)], -1)  # max(tau_j, 0), piece j = 0..m
    right = torch.cat([tau.clamp(max=0), zero], -1)  # min(tau_{j+1}, 0)
    positive = _piece(left[..., :-1], left[..., 1:], slope[..., :-1], intercept[..., :-1])
    from_zero_right = torch.cat([zero, torch.cumsum(positive, -1)], -1)
    negative = _piece(right[..., :-1], right[..., 1:], slope[..., 1:], intercept[..., 1:])
    to_zero_left = torch.cat([negative.flip(-1).cumsum(-1).flip(-1), zero], -1)

    piece = torch.searchsorted(tau, rows.contiguous(), right=True)
    at = lambda v: v.gather(-1, piece)  # noqa: E731
    ahead = rows >= 0
    lo = torch.where(ahead, at(left), rows)
    hi = torch.where(ahead, rows, at(right))
    whole = torch.where(ahead, at(from_zero_right), at(to_zero_left))
    total = whole + _piece(lo, hi, at(slope), at(intercept))
    return restore(torch.where(ahead, total, -total))
