"""Errors that say what went wrong: an inverse asked outside the map's range or not converged,
a map that overflowed its dtype, an inverse whose gradient does not exist; and the switch that
turns the checks reading values back on and off."""

from __future__ import annotations

import torch

from ..numerics.root_finding import DEFAULT_MAX_ITERATIONS

__all__ = ["implicit_step", "overflow_error", "preimage_or_error", "validation_enabled"]


def validation_enabled() -> bool:
    """Whether checks that read values back (non-finite input, range) run.

    Follows Pyro's switch: ``pyro.enable_validation(False)`` turns them off for speed.

    >>> with pyro.validation_enabled(False):
    ...     validation_enabled()
    False
    >>> with pyro.validation_enabled(True):
    ...     validation_enabled()
    True
    """
    return bool(torch.distributions.Distribution._validate_args)


def _first(mask: torch.Tensor) -> tuple[int, ...]:
    """The index of the first True element of ``mask``, for an error message."""
    return tuple(int(i) for i in mask.nonzero()[0])


def _example(y: torch.Tensor, bad: torch.Tensor, bounds, columns) -> str:
    """The first flagged element of y, for an error message (reads one value back); its last
    index is shown as ``columns[index]`` when y holds some coordinates of a larger vector."""
    first = _first(bad)
    shown = list(first)
    if columns is not None:
        shown[-1] = int(columns[first[-1]])
    text = f"y{shown} = {y[first].item():.8g}"
    if bounds is not None:
        low, high = (v.expand_as(y)[first].item() for v in bounds)
        text += f", whose range is ({low:.8g}, {high:.8g})"
    return text


def preimage_or_error(
    x: torch.Tensor,
    y: torch.Tensor,
    found: torch.Tensor,
    allowed: str,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    converged: torch.Tensor | None = None,
    hint: str = "",
    columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """x where a preimage was found (and the solver converged); elsewhere a ValueError
    (validation on) or NaN (off).

    ``bounds`` (the image's ends, broadcastable to y) make the message quote the interval;
    ``columns`` (the coordinates y holds, when it is part of a larger vector) its position.

    >>> x, y = torch.tensor([0.5, 2.0]), torch.tensor([0.25, 9.0])
    >>> found = torch.tensor([True, False])
    >>> with pyro.validation_enabled(False):
    ...     preimage_or_error(x, y, found, "the range is (0, 1)").tolist()
    [0.5, nan]
    >>> with pyro.validation_enabled(True):
    ...     preimage_or_error(x, y, found, "the range is (0, 1)")
    Traceback (most recent call last):
    ...
    ValueError: inverse asked outside the range of the map: 1 value(s) of y have no preimage ...
    """
    ok = found if converged is None else found & converged
    if validation_enabled() and not bool(ok.all()):
        if not bool(found.all()):
            raise ValueError(
                f"inverse asked outside the range of the map: {int((~found).sum())} value(s) "
                f"of y have no preimage (e.g. {_example(y, ~found, bounds, columns)}); {allowed}"
            )
        raise ValueError(
            f"the inverse did not converge within {DEFAULT_MAX_ITERATIONS} Newton iterations "
            f"for {int((~ok).sum())} value(s) of y (e.g. {_example(y, ~ok, None, columns)}): the "
            f"computed map is not increasing there to working precision{hint}"
        )
    return torch.where(ok, x, float("nan"))


def _largest(named: dict[str, torch.Tensor]) -> str:
    """The named tensors that are not finite, or else the three largest in magnitude, as text
    (reads a few values back; for error messages only)."""
    peaks = {}
    for name, value in named.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            value = value.detach()
            if not bool(torch.isfinite(value).all()):
                return f"{name} is not finite"
            peaks[name] = float(value.abs().max())
    top = sorted(peaks.items(), key=lambda item: -item[1])[:3]
    return "the largest magnitudes are " + ", ".join(f"{n} {v:.3g}" for n, v in top)


def overflow_error(
    transform: torch.nn.Module,
    what: str,
    value: torch.Tensor,
    named: dict[str, torch.Tensor],
) -> ValueError:
    """The error for a non-finite ``value`` (the result ``what``) computed from finite inputs:
    its parameters, or the numbers a conditioner gave (``named``), are too large for the
    dtype.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(1, width=4)
    >>> value = torch.tensor([[0.5], [float("inf")]])
    >>> print(overflow_error(transform, "forward map", value, {"offset": transform.offset}))
    UnconstrainedMonotone: the forward map is not finite for finite inputs (e.g. (1, 0) -> inf) ...
    """
    first = _first(~torch.isfinite(value))
    return ValueError(
        f"{type(transform).__name__}: the {what} is not finite for finite inputs (e.g. "
        f"{first} -> {value[first].item()}) because the numbers of the map overflow "
        f"{value.dtype} ({_largest(named)}): its parameters are too large; lower the learning "
        "rate or reset them, or use float64"
    )


def implicit_step(x: torch.Tensor, residual: torch.Tensor, log_slope: torch.Tensor) -> torch.Tensor:
    r"""``x - residual / f'(x)`` for a root x of f(x) = y (``residual`` = f(x) - y, with the
    graph; ``log_slope`` = log f'(x), without): its value is x, its gradient the implicit
    function theorem's,

    .. math::

        \tilde x = x - \frac{f(x) - y}{f'(x)}, \qquad
        d\tilde x = \frac{dy - df(x)}{f'(x)}

    (df the change of f through its parameters at fixed x). Where f' underflows to 0 (a model
    without a tail, far out where it is flat) x has no finite gradient: a ValueError
    (validation on), else the value x alone.

    >>> y = torch.tensor([8.0], requires_grad=True)
    >>> x = torch.tensor([2.0])  # the root of f(x) = x**3 = y, found without gradient
    >>> step = implicit_step(x, x**3 - y, torch.log(3 * x**2))
    >>> step.backward()
    >>> step.item(), round(y.grad.item(), 6)  # dx/dy = 1 / f'(x) = 1/12
    (2.0, 0.083333)
    """
    slope = torch.exp(log_slope)
    flat = slope <= 0
    if validation_enabled() and bool(flat.any()):
        first = _first(flat)
        raise ValueError(
            f"the inverse's gradient is not finite: at the preimage x{list(first)} = "
            f"{x[first].item():.8g} the map is flat to working precision (log f'(x) = "
            f"{log_slope[first].item():.6g}, f' underflows {x.dtype}), so x is not determined "
            "by y there; use float64, or a flow with a tail (tail=True)"
        )
    return x - torch.where(flat, 0.0, residual / torch.where(flat, 1.0, slope))
