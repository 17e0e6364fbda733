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

The backward pass is analytic rather than a graph through every piece: the derivative in x is
:math:`\phi(N(x))`, and in a piece's slope and intercept the moments
:math:`\int t\,\phi'(N)` and :math:`\int \phi'(N)` over the part of the piece each query
covers, in closed form (series for short pieces), gathered over the queries by two cumulative
sums. Slopes and intercepts come from the weights through ordinary autograd.
"""

from __future__ import annotations

import math

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

    return restore(_PiecewiseIntegral.apply(rows.contiguous(), tau, slope, intercept))


# Taylor coefficients, in z^2, of sinh(z)/z and of (z cosh z - sinh z)/z^3 up to z^16: below
# |z| = 1 the next terms are under 1e-16 relative.
_SINHC = [1.0 / math.factorial(2 * k + 1) for k in range(9)]
_MOMENT = [2.0 * k / math.factorial(2 * k + 1) for k in range(1, 10)]


def _series(z2: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    total = torch.full_like(z2, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        total = total * z2 + c
    return total


def _exp_moments(lo, hi, slope, intercept):
    """(int e^N, int t e^N) over [lo, hi] for N = slope t + intercept <= 0 there."""
    half = (hi - lo) / 2
    mid = (hi + lo) / 2
    u_mid = slope * mid + intercept
    z = slope * half
    small = z.abs() < 1.0
    z_safe = torch.where(small, torch.ones_like(z), z)
    z2 = torch.where(small, z, torch.zeros_like(z)).square()
    up, down = torch.exp(u_mid + z_safe), torch.exp(u_mid - z_safe)  # both e^N at an end
    centre = torch.exp(torch.where(small, u_mid, torch.zeros_like(u_mid)))
    # int e^N = 2 half e^u_mid sinh(z) / z,
    # int (t - mid) e^N = 2 half^2 e^u_mid (z cosh z - sinh z) / z^2.
    mean = torch.where(small, centre * _series(z2, _SINHC), (up - down) / (2 * z_safe))
    odd = torch.where(
        small,
        centre * z * _series(z2, _MOMENT),
        ((z_safe - 1) * up + (z_safe + 1) * down) / (2 * z_safe.square()),
    )
    zeroth = 2 * half * mean
    return zeroth, mid * zeroth + 2 * half.square() * odd


def _moments(lo, hi, slope, intercept):
    """(int phi'(N), int t phi'(N)) over [lo, hi] (lo <= hi) for N = slope t + intercept and
    phi = ELU + 1 (phi' = e^N where N <= 0, 1 above), split where N crosses 0."""
    u_lo, u_hi = slope * lo + intercept, slope * hi + intercept
    crossing = (u_lo > 0) != (u_hi > 0)
    safe = torch.where(crossing, slope, torch.ones_like(slope))
    cut = torch.where(crossing, torch.clamp(-intercept / safe, lo, hi), hi).clamp(lo, hi)
    zeroth = first = 0.0
    for a, b in ((lo, cut), (cut, hi)):
        positive = slope * (a + b) / 2 + intercept > 0
        # Where phi' = 1 the exponential moments are not used: feed them zeros (no overflow).
        e0, e1 = _exp_moments(
            a,
            b,
            torch.where(positive, torch.zeros_like(slope), slope),
            torch.where(positive, torch.zeros_like(intercept), intercept),
        )
        zeroth = zeroth + torch.where(positive, b - a, e0)
        first = first + torch.where(positive, (b - a) * (a + b) / 2, e1)
    return zeroth, first


def _pieces(left, right, slope, intercept, rows, piece):
    """(lo, hi, slope, intercept) of the whole pieces beyond 0 (piece j on [left_j,
    left_j+1]), of those below 0 (piece k + 1 on [right_k, right_k+1]) and of the part of its
    piece ``piece`` each query covers (from 0 or the piece's end to the query), concatenated."""
    at = lambda v: v.gather(-1, piece)  # noqa: E731
    ahead = rows >= 0
    last = (
        torch.where(ahead, at(left), rows),
        torch.where(ahead, rows, at(right)),
        at(slope),
        at(intercept),
    )
    beyond = (left[..., :-1], left[..., 1:], slope[..., :-1], intercept[..., :-1])
    below = (right[..., :-1], right[..., 1:], slope[..., 1:], intercept[..., 1:])
    return tuple(torch.cat(parts, -1) for parts in zip(beyond, below, last, strict=True))


class _PiecewiseIntegral(torch.autograd.Function):
    """Signed integral of phi(N) from 0 to each query, N piecewise linear with sorted
    breakpoints ``tau`` (L, m) and per-piece ``slope``, ``intercept`` (L, m + 1); queries
    ``rows`` (L, n). The backward pass is analytic: d/dx = phi(N(x)), and per piece
    d/dslope = int t phi'(N), d/dintercept = int phi'(N) over the part of the piece each query
    covers, gathered over the queries by two cumulative sums instead of one graph per query."""

    @staticmethod
    def forward(ctx, rows, tau, slope, intercept):
        zero = tau.new_zeros(tau.shape[:-1] + (1,))
        left = torch.cat([zero, tau.clamp(min=0)], -1)  # max(tau_j, 0), piece j = 0..m
        right = torch.cat([tau.clamp(max=0), zero], -1)  # min(tau_{j+1}, 0)
        piece = torch.searchsorted(tau, rows, right=True)
        at = lambda v: v.gather(-1, piece)  # noqa: E731
        ahead = rows >= 0
        # The whole pieces on each side of 0 and the piece each query ends in, in one call.
        m, n = tau.shape[-1], rows.shape[-1]
        positive, negative, last = _piece(
            *_pieces(left, right, slope, intercept, rows, piece)
        ).split([m, m, n], -1)
        from_zero_right = torch.cat([zero, torch.cumsum(positive, -1)], -1)
        to_zero_left = torch.cat([negative.flip(-1).cumsum(-1).flip(-1), zero], -1)
        whole = torch.where(ahead, at(from_zero_right), at(to_zero_left))
        total = whole + last
        ctx.save_for_backward(rows, tau, slope, intercept, left, right, piece)
        return torch.where(ahead, total, -total)

    @staticmethod
    def backward(ctx, grad):
        rows, tau, slope, intercept, left, right, piece = ctx.saved_tensors
        at = lambda v: v.gather(-1, piece)  # noqa: E731
        ahead = rows >= 0
        alpha, gamma = at(slope), at(intercept)
        u = alpha * rows + gamma
        phi = torch.where(u > 0, u + 1.0, torch.exp(torch.clamp(u, max=0.0)))
        grad_rows = grad * phi
        # The result is +total for x >= 0 and -total below; sign the incoming gradient.
        signed = torch.where(ahead, grad, -grad)
        zero_row = torch.zeros_like(slope)
        # Queries beyond 0 cover positive piece j (on [left_j, left_j+1], slope j) whole when
        # their piece is after j; queries below 0 cover negative piece k (on [right_k,
        # right_k+1], slope k + 1) whole when their piece is at or before k.
        ahead_count = zero_row.scatter_add(-1, piece, torch.where(ahead, signed, 0.0))
        behind_count = zero_row.scatter_add(-1, piece, torch.where(ahead, 0.0, signed))
        beyond = ahead_count.flip(-1).cumsum(-1).flip(-1)[..., 1:]
        before = behind_count.cumsum(-1)[..., :-1]
        m, n = tau.shape[-1], rows.shape[-1]
        zeroth, first = _moments(*_pieces(left, right, slope, intercept, rows, piece))
        p0, n0, j0 = zeroth.split([m, m, n], -1)
        p1, n1, j1 = first.split([m, m, n], -1)
        pad = torch.zeros_like(slope[..., :1])
        grad_slope = torch.cat([beyond * p1, pad], -1) + torch.cat([pad, before * n1], -1)
        grad_intercept = torch.cat([beyond * p0, pad], -1) + torch.cat([pad, before * n0], -1)
        grad_slope = grad_slope.scatter_add(-1, piece, signed * j1)
        grad_intercept = grad_intercept.scatter_add(-1, piece, signed * j0)
        return grad_rows, None, grad_slope, grad_intercept
