r"""Exact :math:`\int_0^x \phi(N(t))\,dt` for a ReLU network N, with :math:`\phi = \mathrm{ELU} + 1`
or the shifted softplus :math:`\phi(u) = \log(1 + e^{u + k})`, :math:`k = \log(e - 1)`.

With :math:`\rho = \mathrm{ReLU}`, :math:`N(t) = c \sum_r a_r\,\mathrm{relu}(w_r t + b_r)` is
piecewise linear with breakpoints :math:`\tau_r = -b_r / w_r`. On the
piece between consecutive sorted breakpoints, :math:`N(t) = \alpha_j t + \gamma_j`, and

.. math::

    \int_{l}^{h} \phi(\alpha t + \gamma)\,dt = (h - l)\, \Phi[\alpha l + \gamma, \alpha h + \gamma],

the divided difference of an antiderivative :math:`\Phi` of phi, evaluated in a form without
cancellation. For ELU + 1, :math:`\Phi(u) = e^u` (u <= 0) and :math:`u^2/2 + u + 1` (u > 0). For
the softplus, with v = u + k, the antiderivative is the dilogarithm
:math:`G(v) = -\mathrm{Li}_2(-e^v)`: for v <= 0 a series in :math:`s = \log(1 + e^v) \le \log 2`,
:math:`G = s + s^2/4 + \sum_{j \ge 1} B_{2j} s^{2j+1} / (2j+1)!` (Bernoulli numbers; it converges
like :math:`(s / 2\pi)^{2j}`), and for v > 0 the reflection :math:`G(v) = \pi^2/6 + v^2/2 - G(-v)`,
used in the form :math:`\int_p^q \log(1 + e^v) dv = (q^2 - p^2)/2 + G(-p) - G(-q)`. Pieces
shorter than 1/2 in v take a 6-point Gauss-Legendre rule instead, exact to rounding there
(the softplus is analytic within :math:`\pi` of the real axis). Crossing the breakpoint
of unit r adds :math:`c a_r |w_r|` to the slope and :math:`c a_r b_r \operatorname{sign}(w_r)` to
the intercept, so all pieces come from one sort and two cumulative sums. Pieces are accumulated
outwards from 0 (positive and negative half-lines separately) so every partial sum adds positive
terms only: no cancellation between far-away pieces.

The backward pass is analytic rather than a graph through every piece: the derivative in x is
:math:`\phi(N(x))`, and in a piece's slope and intercept the moments
:math:`\int t\,\phi'(N)` and :math:`\int \phi'(N)` over the part of the piece a query covers, in
closed form (series for short pieces). In w, b and a of unit r they add up over the pieces where
the unit is active: :math:`c \int \phi'(N)\,(w_r t + b_r)` in a and so on. Two layouts:

* shared parameters (D, m), many queries: pieces integrated once, gathered per query, the
  moments gathered over the queries by cumulative sums; slopes and intercepts take the
  gradient to the weights through autograd (a small graph of (D, m) tensors);
* one query per parameter row (a conditioner's output): every piece clipped to the row's own
  [0, x], and, when gradients are wanted, the moments and their sums over each unit's active
  pieces computed in the same pass, so the backward pass is a product. On the CPU rows go in
  blocks whose temporaries stay in cache, or, for large calls, through one kernel fused by
  ``torch.compile`` (:mod:`~pyro_overparam_flows.numerics.compilation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import native
from .compilation import FusedKernel

__all__ = ["RELU_INTEGRANDS", "relu_integral"]


class _Split(NamedTuple):
    """u = N(t) over one piece, from u0 to u1, split at u = 0 (where phi = ELU + 1 changes
    form) into an exponential part on [neg_lo, neg_hi] and a linear part on [pos_lo, pos_hi]."""

    lo: torch.Tensor
    hi: torch.Tensor
    flat: torch.Tensor  # lo == hi: means are values
    safe_gap: torch.Tensor  # hi - lo, 1 where flat
    neg_lo: torch.Tensor
    neg_hi: torch.Tensor
    pos_lo: torch.Tensor
    pos_hi: torch.Tensor
    e_hi: torch.Tensor  # e^neg_hi
    exp_part: torch.Tensor  # int e^u over [neg_lo, neg_hi], without cancellation
    mean_phi: torch.Tensor


# Taylor coefficients 1 / (k + 1)! of expm1(z) / z: below |z| = 1/2 the terms left out add up to
# under 6e-17 (float64) and 1.3e-8 (float32) relative, below half a unit in the last place.
_EXPM1 = {
    torch.float64: [1.0 / math.factorial(k + 1) for k in range(14)],
    torch.float32: [1.0 / math.factorial(k + 1) for k in range(8)],
}


def _expm1(z: torch.Tensor) -> torch.Tensor:
    """e^z - 1 without cancellation near 0. Under torch.compile it is a series there:
    Inductor's CPU code (torch 2.13) lowers expm1 to exp - 1, which returns 0 for |z| below
    float32's epsilon (fixed upstream by pytorch/pytorch#190533)."""
    if not torch.compiler.is_compiling():
        return torch.expm1(z)
    small = z.abs() < 0.5
    zs = torch.where(small, z, torch.zeros_like(z))
    series = zs * _series(zs, _EXPM1.get(z.dtype, _EXPM1[torch.float64]))
    return torch.where(small, series, torch.exp(z) - 1.0)


def _split(u0: torch.Tensor, u1: torch.Tensor) -> _Split:
    lo, hi = torch.minimum(u0, u1), torch.maximum(u0, u1)
    gap = hi - lo
    flat = gap <= 0
    safe_gap = torch.where(flat, torch.ones_like(gap), gap)
    neg_lo, neg_hi = lo.clamp(max=0), hi.clamp(max=0)
    pos_lo, pos_hi = lo.clamp(min=0), hi.clamp(min=0)
    e_hi = torch.exp(neg_hi)
    exp_part = -e_hi * _expm1(neg_lo - neg_hi)
    linear_part = (pos_hi - pos_lo) * (1 + (pos_hi + pos_lo) / 2)
    mean_phi = torch.where(
        flat, torch.where(lo > 0, lo + 1, e_hi), (exp_part + linear_part) / safe_gap
    )
    return _Split(lo, hi, flat, safe_gap, neg_lo, neg_hi, pos_lo, pos_hi, e_hi, exp_part, mean_phi)


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


def relu_integral(
    x: torch.Tensor,
    hidden_weight: torch.Tensor,
    hidden_bias: torch.Tensor,
    output_weight: torch.Tensor,
    multiplier: float,
    phi: str = "elu_plus_one",
) -> torch.Tensor:
    r"""Exact :math:`\int_0^x \phi(N(t))\,dt` for ReLU units, phi one of :data:`RELU_INTEGRANDS`.

    :param torch.Tensor x: upper limits, shape ``(*batch, D)``.
    :param torch.Tensor hidden_weight: w, shape ``(D, m)`` (shared by the batch, sorted once per
        call) or ``(*batch, D, m)`` (one sort per row); likewise ``hidden_bias`` and
        ``output_weight``.
    :param float multiplier: the output multiplier c.
    :param str phi: ``"elu_plus_one"`` (ELU + 1) or ``"softplus"`` (:math:`\log(1 + e^{u + k})`,
        :math:`k = \log(e - 1)`, so that phi(0) = 1).
    :returns: the integrals, shape ``(*batch, D)``; differentiable in every argument.

    >>> w = torch.tensor([[1.0]], dtype=torch.float64)
    >>> zero = torch.zeros(1, 1, dtype=torch.float64)
    >>> # N(t) = relu(t): integral of t + 1 over [0, 2] is 4
    >>> relu_integral(torch.tensor([[2.0]], dtype=torch.float64), w, zero, w, 1.0)
    tensor([[4.]], dtype=torch.float64)
    >>> # N = 0: phi(0) = 1 for either phi, so the integral is x
    >>> relu_integral(torch.tensor([[-3.0]], dtype=torch.float64), w, zero, zero, 1.0, "softplus")
    tensor([[-3.]], dtype=torch.float64)
    """
    if phi not in RELU_INTEGRANDS:
        allowed = ", ".join(repr(name) for name in RELU_INTEGRANDS)
        raise ValueError(f"no exact integral for phi={phi!r}; allowed values are {allowed}")
    if not torch.is_grad_enabled():  # a Function sees requires_grad even under no_grad
        x, hidden_weight, hidden_bias, output_weight = (
            v.detach() for v in (x, hidden_weight, hidden_bias, output_weight)
        )
    weights = (hidden_weight, hidden_bias, output_weight)
    shared = all(t.dim() == 2 for t in weights)
    if (
        not shared
        and phi == "elu_plus_one"
        and native.usable(x, *weights)
        and bool(torch.isfinite(x).all())
    ):
        # One pass of C per row, weights shared by the batch read in place (numerics.native).
        return native.relu_integral_rows(x, *weights, multiplier)
    rows, w, b, a, restore = _rows(x, hidden_weight, hidden_bias, output_weight)
    if rows.shape[-1] == 1:
        # One query per parameter row (a conditioner's output): each row's pieces clipped to its
        # own [0, x], with the gradients in w, b and a written out by hand.
        return restore(_RowIntegral.apply(rows.contiguous(), w, b, a, multiplier, phi))
    # Shared parameters: pieces integrated once and gathered per query; slopes and intercepts
    # take their gradients to w, b and a through autograd (a small graph of (D, m) tensors).
    pieces = _Pieces(w, b, a, multiplier)
    lines = pieces.lines()
    return restore(_PiecewiseIntegral.apply(rows.contiguous(), pieces.tau, *lines, phi))


class _Pieces:
    r"""The pieces of :math:`N(t) = c \sum_r a_r \mathrm{relu}(w_r t + b_r)`: sorted
    breakpoints :math:`\tau` (L, m) and each piece's slope and intercept (L, m + 1).

    Crossing the breakpoint of unit r adds :math:`c a_r |w_r|` to the slope and
    :math:`c a_r b_r \operatorname{sign}(w_r)` to the intercept; left of every breakpoint the
    active units are those with w < 0, and those with w = 0 and b > 0 (active everywhere:
    their slope term is 0 in value but carries the gradient in w). The integral does not depend
    on where a breakpoint sits to first order (N is continuous there), so breakpoints carry no
    gradient."""

    def __init__(self, w, b, a, c):
        self.w, self.b, self.a, self.c = w, b, a, c
        limit = _breakpoint_limit(w.dtype)
        self.nonzero = w != 0
        with torch.no_grad():
            tau = -b / torch.where(self.nonzero, w, torch.ones_like(w))
            tau = torch.where(self.nonzero, tau, torch.zeros_like(tau))
            self.tau, self.order = torch.sort(tau.clamp(-limit, limit), dim=-1)
        self.left_active = w < 0
        self.always_active = ~self.nonzero & (b > 0)

    def lines(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Slope and intercept of every piece, differentiable in w, b and a."""
        w, b, a, c, order = self.w, self.b, self.a, self.c, self.order
        slope_step = (c * a * w.abs()).gather(-1, order)
        intercept_step = (c * a * b * torch.sign(w)).gather(-1, order)
        slope0 = c * (a * w * (self.left_active | self.always_active)).sum(-1, keepdim=True)
        intercept0 = c * (a * (b * self.left_active + torch.relu(b) * ~self.nonzero)).sum(
            -1, keepdim=True
        )
        slope = torch.cat([slope0, slope0 + torch.cumsum(slope_step, -1)], -1)
        intercept = torch.cat([intercept0, intercept0 + torch.cumsum(intercept_step, -1)], -1)
        return slope, intercept

    def parameter_gradients(self, grad_slope, grad_intercept):
        """The gradients in w, b and a given those in the slopes and intercepts. Unit r adds
        :math:`c a_r (w_r t + b_r)` to N on the pieces where it is active, so its gradients are
        :math:`c a_r S_r`, :math:`c a_r I_r` and :math:`c (w_r S_r + b_r I_r)`, with S and I the
        slope and intercept gradients summed over those pieces: the pieces after its breakpoint
        (w > 0), before it (w < 0), all of them (w = 0 < b) or none. Each is a sum of the
        pieces' own terms, so nothing cancels."""
        w, b, a, c = self.w, self.b, self.a, self.c
        units = torch.empty_like(self.order).scatter_(
            -1, self.order, torch.arange(w.shape[-1], device=w.device).expand_as(self.order)
        )

        def active(g: torch.Tensor) -> torch.Tensor:
            before = g[..., :-1].cumsum(-1).gather(-1, units)  # pieces 0..k at position k
            after = g[..., 1:].flip(-1).cumsum(-1).flip(-1).gather(-1, units)  # k+1..m
            everywhere = torch.where(self.always_active, g.sum(-1, keepdim=True), 0.0)
            return torch.where(w > 0, after, torch.where(self.left_active, before, everywhere))

        slopes, intercepts = active(grad_slope), active(grad_intercept)
        ca = c * a
        return ca * slopes, ca * intercepts, c * torch.addcmul(w * slopes, b, intercepts)


def _series(z: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    total = torch.full_like(z, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        total = total * z + c
    return total


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
    def forward(ctx, rows, tau, slope, intercept, phi):
        integrand = RELU_INTEGRANDS[phi]
        zero = tau.new_zeros(tau.shape[:-1] + (1,))
        left = torch.cat([zero, tau.clamp(min=0)], -1)  # max(tau_j, 0), piece j = 0..m
        right = torch.cat([tau.clamp(max=0), zero], -1)  # min(tau_{j+1}, 0)
        piece = torch.searchsorted(tau, rows, right=True)
        at = lambda v: v.gather(-1, piece)  # noqa: E731
        ahead = rows >= 0
        # The whole pieces on each side of 0 and the piece each query ends in, in one call.
        m, n = tau.shape[-1], rows.shape[-1]
        parts = _pieces(left, right, slope, intercept, rows, piece)
        positive, negative, last = integrand.pieces(*parts, False)[0].split([m, m, n], -1)
        from_zero_right = torch.cat([zero, torch.cumsum(positive, -1)], -1)
        to_zero_left = torch.cat([negative.flip(-1).cumsum(-1).flip(-1), zero], -1)
        whole = torch.where(ahead, at(from_zero_right), at(to_zero_left))
        total = whole + last
        ctx.save_for_backward(rows, tau, slope, intercept, left, right, piece)
        ctx.integrand = integrand
        return torch.where(ahead, total, -total)

    @staticmethod
    def backward(ctx, grad):
        rows, tau, slope, intercept, left, right, piece = ctx.saved_tensors
        at = lambda v: v.gather(-1, piece)  # noqa: E731
        ahead = rows >= 0
        integrand = ctx.integrand
        grad_rows = grad * integrand.value(at(slope) * rows + at(intercept))
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
        parts = _pieces(left, right, slope, intercept, rows, piece)
        _, zeroth, first = integrand.pieces(*parts, True)
        p0, n0, j0 = zeroth.split([m, m, n], -1)
        p1, n1, j1 = first.split([m, m, n], -1)
        pad = torch.zeros_like(slope[..., :1])
        grad_slope = torch.cat([beyond * p1, pad], -1) + torch.cat([pad, before * n1], -1)
        grad_intercept = torch.cat([beyond * p0, pad], -1) + torch.cat([pad, before * n0], -1)
        grad_slope = grad_slope.scatter_add(-1, piece, signed * j1)
        grad_intercept = grad_intercept.scatter_add(-1, piece, signed * j0)
        return grad_rows, None, grad_slope, grad_intercept, None


# Taylor coefficients, in h^2, of (h cosh h - sinh h) / h^3 = sum 2k / (2k + 1)! h^(2k - 2):
# below h = 1/2 the terms kept leave under 2e-17 (float64) and 3e-9 (float32) relative.
_CENTRAL = {
    torch.float64: [2.0 * k / math.factorial(2 * k + 1) for k in range(1, 8)],
    torch.float32: [2.0 * k / math.factorial(2 * k + 1) for k in range(1, 5)],
}


def _central_exp_moment(h: torch.Tensor, centre_exp: torch.Tensor, e_hi, e_lo) -> torch.Tensor:
    r""":math:`\int_{c-h}^{c+h} (u - c)\,e^u\,du = 2 e^c (h \cosh h - \sinh h)`, h >= 0, by its
    series below h = 1/2 and from the end values :math:`e^{c \pm h}` above."""
    small = h < 0.5
    hs = torch.where(small, h, torch.zeros_like(h))
    coefficients = _CENTRAL.get(h.dtype, _CENTRAL[torch.float64])
    series = _series(hs.square(), coefficients) * hs.pow(3) * (2 * centre_exp)
    direct = h * (e_hi + e_lo) - (e_hi - e_lo)
    return torch.where(small, series, direct)


def _elu_pieces(starts, ends, slope, intercept, moments: bool):
    r"""Per piece, the integral of :math:`\phi(N)` over [start, end] and, with ``moments``,
    :math:`\int \phi'(N)` and :math:`\int t\,\phi'(N)` there (N = slope t + intercept, phi =
    ELU + 1). Each is an interval length times a mean over u = N(t) in [lo, hi], split at
    u = 0 into an exponential part and a linear part, each without cancellation."""
    length = ends - starts
    u0, u1 = torch.addcmul(intercept, slope, starts), torch.addcmul(intercept, slope, ends)
    p = _split(u0, u1)
    integral = length * p.mean_phi
    if not moments:
        return integral, None, None
    pos_length = p.pos_hi - p.pos_lo
    mean_dphi = torch.where(
        p.flat,
        torch.where(p.lo > 0, torch.ones_like(p.lo), p.e_hi),
        (p.exp_part + pos_length) / p.safe_gap,
    )
    zeroth = length * mean_dphi
    # J = int (u - c) phi'(u) du over [lo, hi], c the midpoint: the linear part, then the
    # exponential part about its own midpoint plus the shift between the midpoints.
    centre = (p.lo + p.hi) / 2
    neg_centre, half = (p.neg_lo + p.neg_hi) / 2, (p.neg_hi - p.neg_lo) / 2
    central = _central_exp_moment(half, torch.exp(neg_centre), p.e_hi, torch.exp(p.neg_lo))
    linear = pos_length * ((p.pos_hi + p.pos_lo) / 2 - centre)
    moment = linear + central + (neg_centre - centre) * p.exp_part
    # int (t - mid) phi'(N) dt = sign(slope) J / slope^2 = sign(slope) J length^2 / gap^2.
    offcentre = torch.where(
        p.flat, torch.zeros_like(moment), torch.sign(slope) * moment / p.safe_gap / p.safe_gap
    )
    first = (starts + ends) / 2 * zeroth + offcentre * length.square()
    return integral, zeroth, first


def _elu_value(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u > 0, u + 1.0, torch.exp(u.clamp(max=0.0)))


# The softplus integrand phi(u) = log(1 + e^(u + k)): phi(0) = 1.
_SOFTPLUS_SHIFT = math.log(math.e - 1.0)


def _bernoulli_numbers(count: int) -> list[Fraction]:
    """B_0 .. B_count (B_1 = -1/2), by the recurrence sum_j C(n + 1, j) B_j = 0."""
    numbers = [Fraction(1)]
    for n in range(1, count + 1):
        numbers.append(-sum(math.comb(n + 1, j) * numbers[j] for j in range(n)) / (n + 1))
    return numbers


def _dilogarithm_coefficients(terms: int) -> list[float]:
    """B_2j / (2j + 1)! for j = 1 .. terms: G = s + s^2/4 + s^3 sum_j c_j s^(2j - 2)."""
    bernoulli = _bernoulli_numbers(2 * terms)
    return [float(bernoulli[2 * j] / math.factorial(2 * j + 1)) for j in range(1, terms + 1)]


# With s <= log 2 the terms fall like (s / 2 pi)^2j: the first left out are below 1e-17
# (float64) and 1e-9 (float32) relative.
_DILOGARITHM = {
    torch.float64: _dilogarithm_coefficients(9),
    torch.float32: _dilogarithm_coefficients(4),
}
# Gauss-Legendre on [-1, 1] for pieces shorter than 1/2 in v: the softplus has its poles pi away
# from the real axis, so 6 nodes leave under 1e-16 relative.
_SHORT_PIECE = 0.5
_NODES = [(float(t), float(w)) for t, w in zip(*np.polynomial.legendre.leggauss(6), strict=True)]


def _dilogarithm(v: torch.Tensor) -> torch.Tensor:
    r""":math:`G(v) = \int_{-\infty}^v \log(1 + e^t)\,dt = -\mathrm{Li}_2(-e^v)` for v <= 0 (larger
    v are clamped to 0), to full relative accuracy however negative v is."""
    s = F.softplus(v.clamp(max=0.0))
    coefficients = _DILOGARITHM.get(v.dtype, _DILOGARITHM[torch.float64])
    return s + s.square() * (0.25 + s * _series(s.square(), coefficients))


def _softplus_pieces(starts, ends, slope, intercept, moments: bool):
    r"""As :func:`_elu_pieces`, for :math:`\phi(u) = \log(1 + e^{u + k})`. With v = N + k on
    [lo, hi] split at v = 0, the closed forms

    .. math::

        \int \phi = G(n_1) - G(n_0) + \tfrac{(p_1 - p_0)(p_1 + p_0)}{2} + G(-p_0) - G(-p_1),
        \qquad \int \phi' = \mathrm{sp}(n_1) - \mathrm{sp}(n_0) + (p_1 - p_0)
        - \mathrm{sp}(-p_0) + \mathrm{sp}(-p_1),

    over the negative part :math:`[n_0, n_1]` and the positive part :math:`[p_0, p_1]`, and
    :math:`\int (v - c)\phi'(v)\,dv` about the midpoint c by parts the same way; every term is
    bounded by its part's own size, so nothing cancels. Pieces shorter than 1/2 in v (where
    the divided differences would cancel) take a 6-point Gauss-Legendre rule in t instead."""
    length = ends - starts
    v0 = torch.addcmul(intercept, slope, starts) + _SOFTPLUS_SHIFT
    v1 = torch.addcmul(intercept, slope, ends) + _SOFTPLUS_SHIFT
    centre, half = (v0 + v1) / 2, (v1 - v0) / 2  # half is signed: v along increasing t
    short = half.abs() < _SHORT_PIECE / 2
    # Short pieces: t_i = mid + xi_i length / 2, v_i = centre + xi_i half.
    nodes = [centre + xi * half.clamp(-_SHORT_PIECE, _SHORT_PIECE) for xi, _ in _NODES]
    quadrature_phi = sum(omega * F.softplus(v) for v, (_, omega) in zip(nodes, _NODES, strict=True))
    lo, hi = torch.minimum(v0, v1), torch.maximum(v0, v1)
    gap = torch.where(short, torch.ones_like(hi), hi - lo)
    n0, n1 = lo.clamp(max=0.0), hi.clamp(max=0.0)
    p0, p1 = lo.clamp(min=0.0), hi.clamp(min=0.0)
    g_n0, g_n1, g_p0, g_p1 = (_dilogarithm(v) for v in (n0, n1, -p0, -p1))
    whole = g_n1 - g_n0 + (p1 - p0) * (p1 + p0) / 2 + (g_p0 - g_p1)
    integral = length * torch.where(short, quadrature_phi / 2, whole / gap)
    if not moments:
        return integral, None, None
    sigmoids = [torch.sigmoid(v) for v in nodes]
    quadrature_dphi = sum(omega * q for q, (_, omega) in zip(sigmoids, _NODES, strict=True))
    quadrature_first = sum(xi * omega * q for q, (xi, omega) in zip(sigmoids, _NODES, strict=True))
    sp_n0, sp_n1, sp_p0, sp_p1 = (F.softplus(v) for v in (n0, n1, -p0, -p1))
    whole_dphi = sp_n1 - sp_n0 + (p1 - p0) - (sp_p0 - sp_p1)
    zeroth = length * torch.where(short, quadrature_dphi / 2, whole_dphi / gap)
    # J = int (v - c) phi'(v) dv over [lo, hi]: negative part by parts, (v - c) sp(v) - G(v);
    # positive part the line's (v - c) minus the by-parts (v - c) sp(-v) + G(-v) of the rest.
    mid = (lo + hi) / 2
    moment = (
        (n1 - mid) * sp_n1
        - g_n1
        - (n0 - mid) * sp_n0
        + g_n0
        + (p1 - p0) * ((p1 + p0) / 2 - mid)
        + (p1 - mid) * sp_p1
        + g_p1
        - (p0 - mid) * sp_p0
        - g_p0
    )
    # int (t - mid_t) phi'(N) dt = sign(slope) J / slope^2 = sign(slope) J length^2 / gap^2.
    offcentre = torch.where(short, quadrature_first / 4, torch.sign(slope) * moment / gap.square())
    first = (starts + ends) / 2 * zeroth + offcentre * length.square()
    return integral, zeroth, first


class _Integrand(NamedTuple):
    """phi of an exact ReLU integral: its value, and its pieces' integrals and moments."""

    value: Callable[[torch.Tensor], torch.Tensor]
    pieces: Callable[..., tuple]


def _softplus_value(u: torch.Tensor) -> torch.Tensor:
    return F.softplus(u + _SOFTPLUS_SHIFT)


#: The phi for which the integral of phi(N), N a ReLU network, is computed exactly.
#:
#: :meta hide-value:
RELU_INTEGRANDS: dict[str, _Integrand] = {
    "elu_plus_one": _Integrand(_elu_value, _elu_pieces),
    "softplus": _Integrand(_softplus_value, _softplus_pieces),
}


# Elements of one (rows x pieces) block of the per-row integral: eagerly per CPU thread,
# compiled, and on a device.
_ROW_BLOCK_ELEMENTS = 1 << 15
_COMPILED_BLOCK_ELEMENTS = 1 << 20
_DEVICE_BLOCK_ELEMENTS = 1 << 22


class _RowIntegral(torch.autograd.Function):
    """Signed integral of phi(N) from 0 to one query per row, ``rows`` (L, 1), for the ReLU
    network of that row's w, b, a (L, m): every piece clipped to the row's [min(0, x), max(0, x)]
    (pieces outside get length 0). Rows are taken in blocks (eagerly on the CPU small enough
    that their temporaries stay in cache; compiled, large); when gradients are wanted the same
    pass computes each piece's moments and maps them to w, b and a, so the backward pass is a
    product."""

    @staticmethod
    def forward(ctx, rows, w, b, a, c, phi):
        needed = ctx.needs_input_grad[:4]
        gradients = any(needed)  # everything a gradient can need, or only the integral
        compiled = _ROW_BLOCK.uses_compiled(rows, w.numel())
        size = max(1, _block_elements(rows, compiled) // w.shape[-1])
        kept = (True, *needed) if gradients else (True,)  # the outputs anything uses
        if rows.shape[0] <= size:  # one block: its outputs are the results
            part = _ROW_BLOCK(rows, w, b, a, c, gradients, phi, compiled=compiled)
            values = [v if keep else None for v, keep in zip(part, kept, strict=True)]
        else:
            values = None
            for start in range(0, rows.shape[0], size):
                block = slice(start, start + size)
                part = _ROW_BLOCK(
                    rows[block], w[block], b[block], a[block], c, gradients, phi, compiled=compiled
                )
                if values is None:
                    values = [
                        v.new_empty((rows.shape[0], *v.shape[1:])) if keep else None
                        for v, keep in zip(part, kept, strict=True)
                    ]
                for out, value in zip(values, part, strict=True):
                    if out is not None:
                        out[block] = value
        integral, *saved = values
        ctx.save_for_backward(*(saved or [None] * 4))
        return torch.where(rows < 0, -integral, integral)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return (*(None if g is None else grad * g for g in ctx.saved_tensors), None, None)


def _row_block(x, w, b, a, c: float, gradients: bool, phi: str):
    """One block of :class:`_RowIntegral`: the unsigned integral of each row over [min(0, x),
    max(0, x)] and, with ``gradients``, the signed integral's derivatives: phi(N(x)) in x and
    the gradients in w, b and a."""
    integrand = RELU_INTEGRANDS[phi]
    pieces = _Pieces(w, b, a, c)
    slope, intercept = pieces.lines()
    low, high = x.clamp(max=0), x.clamp(min=0)
    inner = torch.clamp(pieces.tau, low, high)
    starts, ends = torch.cat([low, inner], -1), torch.cat([inner, high], -1)
    part, zeroth, first = integrand.pieces(starts, ends, slope, intercept, gradients)
    integral = part.sum(-1, keepdim=True)
    if not gradients:
        return (integral,)
    # d/dx = phi(N(x)), N(x) on the piece holding x.
    at = torch.searchsorted(pieces.tau, x, right=True)
    slope_x = integrand.value(slope.gather(-1, at) * x + intercept.gather(-1, at))
    below = x < 0  # the result is -integral there
    signed = [torch.where(below, -g, g) for g in (first, zeroth)]
    return (integral, slope_x, *pieces.parameter_gradients(*signed))


_ROW_BLOCK = FusedKernel(_row_block, "exact ReLU integral")


def _block_elements(t: torch.Tensor, compiled: bool) -> int:
    """Elements of one block of per-row work: on the CPU, eagerly, a working set that stays in
    cache for each thread; compiled (whose fused loops keep few temporaries) or on an
    accelerator, large blocks that only bound the memory of temporaries."""
    if t.device.type != "cpu":
        return _DEVICE_BLOCK_ELEMENTS
    return _COMPILED_BLOCK_ELEMENTS if compiled else _ROW_BLOCK_ELEMENTS * torch.get_num_threads()
