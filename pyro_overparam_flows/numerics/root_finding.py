r"""Batched inversion of strictly increasing scalar maps: bracketing and safeguarded Newton.

Every element is solved at once; there is no Python loop over elements. Iterations run under a
fixed budget. On the CPU the loop stops as soon as every element has converged (reading a flag
there costs no device synchronization); on an accelerator it runs the whole budget without
reading anything back. Converged elements are frozen, so both give the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["bracket_increasing", "solve_increasing", "solver_tolerance"]

ValueAndDerivative = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Newton iterations allowed per call. ``benchmarks/newton_iterations.py`` measured at most 44
#: for constrained flows and 24 for the exact ReLU flow (x in +-[1e-4, 1e4], float32 and float64,
#: widths 1 to 256), 52 for a softplus network whose image is a half-line; 64 halvings also
#: shrink any bracket from the bracketing step (ratio 4) to adjacent float64 numbers.
DEFAULT_MAX_ITERATIONS = 64
#: Geometric bracket expansions allowed (step grows 4x: 4**64 covers the float32 range).
DEFAULT_MAX_EXPANSIONS = 64


def solver_tolerance(y: torch.Tensor) -> torch.Tensor:
    r"""The residual the solver accepts, :math:`8 \epsilon (1 + |y|)` in y's dtype
    (:math:`\epsilon` its machine epsilon).

    >>> y = torch.tensor([0.0, 1.0, -3.0], dtype=torch.float64)
    >>> (solver_tolerance(y) / torch.finfo(torch.float64).eps).tolist()
    [8.0, 16.0, 32.0]
    """
    return 8.0 * torch.finfo(y.dtype).eps * (1.0 + y.abs())


def _may_stop_early(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


def solve_increasing(
    fn: ValueAndDerivative,
    y: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    initial: torch.Tensor | None = None,
    *,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Solve :math:`f(x) = y` elementwise for an increasing f, given a bracket.

    Each iteration evaluates ``fn(x) = (f(x), f'(x))``, shrinks the bracket to the side of the
    root, and takes the Newton step :math:`x - (f(x) - y) / f'(x)` when it lands in the bracket
    and is at most half the step before last (the safeguard of Numerical Recipes' ``rtsafe``,
    which stops Newton from cycling), the bisection point otherwise. An element stops, after one
    last Newton step,
    when :math:`|f(x) - y| \le 8 \epsilon (1 + |y|)`, when the Newton correction
    :math:`|f(x) - y| / f'(x)` is under half a unit of x (x is then the closest float to the
    root, even where rounding in f leaves a larger residual), or when its bracket has shrunk to
    adjacent floats; and when a step no longer moves it.

    :param fn: maps x to ``(f(x), f'(x))``, elementwise.
    :param torch.Tensor y: targets.
    :param torch.Tensor lower: finite lower ends with ``f(lower) <= y``.
    :param torch.Tensor upper: finite upper ends with ``f(upper) >= y``.
    :param initial: starting points (clamped into the bracket); the midpoint if None.
    :param int max_iterations: the iteration budget.
    :returns: ``(x, converged)``; an element that stopped moving without meeting the tolerance
        or collapsing its bracket is not converged.

    >>> y = torch.tensor([0.5, 8.0], dtype=torch.float64)
    >>> cube = lambda x: (x ** 3, 3 * x ** 2)
    >>> x, ok = solve_increasing(cube, y, torch.zeros_like(y), torch.full_like(y, 4.0))
    >>> torch.allclose(x ** 3, y), bool(ok.all())
    (True, True)
    """
    tolerance = solver_tolerance(y)
    x = (
        (lower + upper) / 2.0
        if initial is None
        else torch.minimum(torch.maximum(initial, lower), upper)
    )
    done = torch.zeros_like(y, dtype=torch.bool)
    solved = torch.zeros_like(done)
    last_step = step_before_last = upper - lower
    for iteration in range(max_iterations):
        value, slope = fn(x)
        residual = value - y
        lower = torch.where(residual < 0, x, lower)
        upper = torch.where(residual > 0, x, upper)
        newton = x - residual / slope
        inside = (newton >= lower) & (newton <= upper)
        # A Newton step that does not move (infinite slope) is no progress: bisect instead.
        accept = inside & (newton != x) & ((newton - x).abs() <= 0.5 * step_before_last.abs())
        proposal = torch.where(accept, newton, (lower + upper) / 2.0)
        step_before_last, last_step = last_step, proposal - x
        collapsed = torch.nextafter(lower, upper) >= upper
        # A Newton correction under half a unit of x (with a finite slope): x is the closest
        # float to the root, whatever rounding the residual carries (f = beta + integral
        # cancels when |beta| >> |y|, so its residual can sit above the tolerance there).
        size = x.abs()
        spacing = torch.nextafter(size, torch.full_like(size, math.inf)) - size
        resolved = torch.isfinite(slope) & ((residual / slope).abs() <= spacing / 2)
        converged = (residual.abs() <= tolerance) | collapsed | resolved
        # A converged element still takes its last Newton step (free: f and f' are in hand).
        step = torch.where(converged, torch.where(inside, newton, x), proposal)
        stalled = step == x
        x = torch.where(done, x, step)
        solved = solved | (converged & ~done)
        done = done | converged | stalled
        if _may_stop_early(x) and iteration % 4 == 3 and bool(done.all()):
            break
    return x, solved


def bracket_increasing(
    fn: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    start: torch.Tensor,
    *,
    step: float = 1.0,
    growth: float = 4.0,
    max_expansions: int = DEFAULT_MAX_EXPANSIONS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Find finite ``lower <= upper`` with ``f(lower) <= y <= f(upper)`` for an increasing f.

    From ``start`` (or 0 where f(start) is not finite) each element walks towards its root with
    steps ``step * growth**k``; the last two points visited bracket the root, their values
    infinite where f overflows there. A point whose value is within the solver's
    tolerance :math:`8 \epsilon (1 + |y|)` of y counts as reaching it, so targets rounded onto an
    asymptote of f (where f is flat to working precision) are still found. An element whose root
    lies beyond the expansion budget or the largest finite number (y outside the range of f) is
    reported as not found.

    :param fn: maps x to f(x), elementwise.
    :param torch.Tensor y: targets.
    :param torch.Tensor start: starting points.
    :returns: ``(lower, upper, found)``.

    >>> y = torch.tensor([-100.0, 0.5, 1e6], dtype=torch.float64)
    >>> lower, upper, found = bracket_increasing(lambda x: x ** 3, y, torch.zeros_like(y))
    >>> bool(found.all()), bool(((lower ** 3 <= y) & (y <= upper ** 3)).all())
    (True, True)
    """
    tolerance = solver_tolerance(y)
    value = fn(start)
    unusable = ~torch.isfinite(value)
    if not _may_stop_early(y) or bool(unusable.any()):
        # A start where f overflows (a guess far from the root of a steep map) walks from 0.
        start = torch.where(unusable, torch.zeros_like(start), start)
        value = torch.where(unusable, fn(start), value)
    up = value < y
    found = (value - y).abs() <= tolerance
    lower, upper, previous = start, start, start
    direction = torch.where(up, 1.0, -1.0).to(y.dtype)
    distance = torch.full_like(y, step)
    for _ in range(max_expansions):
        point = start + direction * distance
        value = fn(point)
        # Only finite points count (far enough out the step overflows); a value that
        # overflowed still tells the side of the root, unless it is NaN.
        usable = torch.isfinite(point) & ~torch.isnan(value)
        reached = torch.where(up, value >= y - tolerance, value <= y + tolerance)
        crossed = ~found & usable & reached
        lower = torch.where(crossed, torch.where(up, previous, point), lower)
        upper = torch.where(crossed, torch.where(up, point, previous), upper)
        found = found | crossed
        previous = torch.where(found, previous, point)
        distance = distance * growth
        if _may_stop_early(y) and bool(found.all()):
            break
    return lower, upper, found
