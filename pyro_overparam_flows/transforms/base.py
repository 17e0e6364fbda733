"""Behaviour shared by the element-wise monotone transforms: caching, validation, inversion."""

from __future__ import annotations

import itertools

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..numerics.root_finding import DEFAULT_MAX_ITERATIONS
from ..parametrizations import Parametrization
from ..validation import check_dtype, check_positive_int

__all__ = [
    "MonotoneBase",
    "MonotoneTransformModule",
    "RefuseHalfPrecision",
    "check_input_dim",
    "check_width",
    "implicit_step",
    "overflow_error",
    "preimage_or_error",
    "resolve_tail",
    "validation_enabled",
]


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


class RefuseHalfPrecision:
    """A mixin for :class:`torch.nn.Module` s: ``.to()``, ``.half()`` and the like raise a
    ValueError, before converting anything, when asked for a dtype other than float32 or
    float64.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(1, width=4)
    >>> isinstance(transform, RefuseHalfPrecision)
    True
    >>> transform.half()
    Traceback (most recent call last):
    ...
    ValueError: converting UnconstrainedMonotone to torch.float16 is not supported: ...
    >>> transform.double().hidden_weight.dtype
    torch.float64
    """

    def _apply(self, fn, *args, **kwargs):
        try:
            probe = fn(torch.zeros(1))
        except Exception:  # a device that is not there, say: the conversion itself will tell
            probe = None
        if isinstance(probe, torch.Tensor) and probe.dtype != torch.float32:
            check_dtype(probe.dtype, f"converting {type(self).__name__} to")
        return super()._apply(fn, *args, **kwargs)


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


def check_input_dim(value: object, name: str = "input_dim") -> int:
    """``value`` if it is an integer >= 1 (not a bool), else a ValueError naming ``name``.

    >>> check_input_dim(3)
    3
    >>> check_input_dim(0, "layers")
    Traceback (most recent call last):
    ...
    ValueError: layers must be an integer >= 1, got 0
    """
    return check_positive_int(value, name)


def resolve_tail(tail: object, parametrization: Parametrization) -> bool:
    """Whether a flow has a tail: ``tail`` itself if True or False; if None (the default), a
    tail for the width-aware parametrizations and none for the paper's presets, which
    reproduce the paper's bounded models.

    >>> from pyro_overparam_flows.parametrizations import CONSTRAINED_PARAMETRIZATIONS as P
    >>> resolve_tail(None, P["standard"]), resolve_tail(None, P["standard-normal"])
    (True, False)
    >>> resolve_tail(False, P["standard"])
    False
    """
    if tail is None:
        return parametrization.width_aware
    if not isinstance(tail, bool):
        raise ValueError(f"tail must be True, False or None (the default), got {tail!r}")
    return tail


def check_width(width: object) -> int:
    """``width`` if it is an integer >= 1 (not a bool), else a ValueError.

    >>> check_width(16)
    16
    >>> check_width(True)
    Traceback (most recent call last):
    ...
    ValueError: width must be an integer >= 1, got True
    """
    return check_positive_int(width, "width")


_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


# Every torch optimizer step (Pyro's optimizers included) invalidates every cached pair: some
# optimizers write p.data, which leaves the parameters' version counters as they were.
register_optimizer_step_post_hook(_count_optimizer_step)


class MonotoneBase(RefuseHalfPrecision, TransformModule):
    r"""What every transform of this package shares: a bijection of ``real_vector`` with a
    positive Jacobian determinant (:math:`\det J > 0`, ``sign = 1``), Pyro's cache made safe
    for training, and input checks.

    The cache holds the last ``(x, y)`` pair and answers only the opposite direction: the
    inverse of an output just computed (a sample scored) is returned without a solve, while
    the same input passed again is computed again. The pair is dropped when a parameter
    changes, after any optimizer step, and once a backward pass has gone through the output.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(2, width=4)
    >>> isinstance(transform, MonotoneBase), transform.bijective, transform.sign
    (True, True, 1)
    >>> x = torch.randn(3, 2)
    >>> y = transform(x)
    >>> transform.inv(y) is x  # the cached pair: no Newton solve
    True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = False

    def __init__(self, input_dim: int):
        check_input_dim(input_dim)
        check_dtype(torch.get_default_dtype(), "the default dtype")
        super().__init__(cache_size=1)
        self.input_dim = input_dim
        self._cache_state: tuple = ()
        self._cached_direction: str | None = None
        self._cache_token: object | None = None
        # (x, network) of the last forward or inverse call of a conditioned transform, so the
        # log-det that follows does not run the conditioner again.
        self._cached_network: tuple | None = None

    @property
    def sign(self) -> int:
        return 1

    # Pyro's cache is keyed on tensor identity; four rules keep it from answering with a stale
    # pair. (1) A pair answers only the opposite direction: the inverse of an output just
    # computed (a sample scored), never the same input again (data passed every step). (2) It
    # is dropped when a parameter or buffer was changed in place, replaced (pyro.module loading
    # the param store, torch.func.functional_call) or switched requires_grad, or when gradients
    # are on now but were off when it was made. (3) It is dropped after any optimizer step in
    # the process, since optimizers that write ``p.data`` (Pyro's ClippedAdam) leave the
    # version counters alone, also for the transforms of other ``.condition()`` calls sharing
    # the parameters. (4) It is dropped once a backward pass has gone through the output, for
    # hand-written updates of ``p.data``.
    def _cache_key(self) -> tuple:
        tensors = itertools.chain(self.parameters(), self.buffers())
        versions = tuple((id(t), t._version, t.requires_grad) for t in tensors)
        return torch.is_grad_enabled(), _optimizer_steps, versions

    def _forget(self) -> None:
        self._cached_x_y = None, None
        self._cached_network = None
        self._cached_direction = None

    def _refresh_cache(self) -> None:
        key = self._cache_key()
        if key != self._cache_state:
            self._forget()
            self._cache_state = key

    def _remember(self, x: torch.Tensor, y: torch.Tensor, direction: str) -> None:
        self._cached_x_y = x, y
        self._cached_direction = direction
        output = y if direction == "forward" else x
        if output.requires_grad:
            token = object()
            self._cache_token = token

            def forget_after_backward(grad: torch.Tensor) -> None:
                if self._cache_token is token:
                    self._forget()

            output.register_hook(forget_after_backward)

    def __getstate__(self) -> dict:
        # The cached pair may hold non-leaf tensors of a finished graph: copies and pickles of
        # a used transform start with an empty cache.
        state = super().__getstate__()
        state["_cached_x_y"] = None, None
        state["_cache_state"] = ()
        state["_cached_network"] = None
        state["_cached_direction"] = None
        state["_cache_token"] = None
        return state

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._refresh_cache()
        x_old, y_old = self._cached_x_y
        if x is x_old and self._cached_direction == "inverse":
            return y_old
        y = self._call(x)
        self._remember(x, y, "forward")
        return y

    def _inv_call(self, y: torch.Tensor) -> torch.Tensor:
        self._refresh_cache()
        x_old, y_old = self._cached_x_y
        if y is y_old and self._cached_direction == "forward":
            return x_old
        x = self._inverse(y)
        self._remember(x, y, "inverse")
        return x

    def _finite(
        self, value: torch.Tensor, what: str, named: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``value`` (computed from finite inputs), or a ValueError naming the overflow if it is
        not finite (validation on). ``named`` adds the numbers a conditioner gave."""
        if validation_enabled() and not bool(torch.isfinite(value).all()):
            raise overflow_error(
                self, what, value, {**dict(self.named_parameters()), **(named or {})}
            )
        return value

    def _check(self, value: torch.Tensor, name: str) -> None:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() == 0 or value.shape[-1] != self.input_dim:
            raise ValueError(
                f"{name} must have shape (..., {self.input_dim}) (last dimension = input_dim), "
                f"got shape {tuple(value.shape)}"
            )
        if not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        check_dtype(value.dtype, f"{name} of dtype")
        dtype = next(self.parameters()).dtype
        if value.dtype != dtype:
            raise ValueError(
                f"{name} has dtype {value.dtype} but the transform's parameters are {dtype}; "
                f"convert one of them, e.g. transform.to({dtype})"
            )
        if validation_enabled() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{name} contains NaN or infinite values; only finite inputs are allowed"
            )


class MonotoneTransformModule(MonotoneBase):
    r"""A strictly increasing map applied to each coordinate of the last dimension,

    .. math::

        y_d = f_d(x_d), \qquad \log|\det J| = \sum_d \log f_d'(x_d).

    Subclasses mix in a family (``_map_with``, ``_log_derivative_with``, ``_solve_with`` of a
    network: f, log f' per coordinate, f^-1 without gradient) and give ``network()``. This
    class adds gradients of the inverse by the implicit function theorem
    (:func:`implicit_step`).

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(2, width=8)
    >>> isinstance(transform, MonotoneTransformModule)
    True
    >>> x = torch.randn(5, 2)
    >>> y = transform(x)
    >>> torch.allclose(transform.inv(y.clone()), x, atol=1e-5)  # a new tensor: Newton's solve
    True
    >>> transform.log_abs_det_jacobian(x, y).shape
    torch.Size([5])
    """

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        return self._finite(self._map(x), "forward map")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""log-Jacobian: :math:`\log|\det J| = \sum_d \log f'(x_d)` over the last dimension."""
        self._check(x, "x")
        return self._finite(self._log_derivative(x).sum(-1), "log-Jacobian")

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        with torch.no_grad():
            x = self._solve(y)
        if torch.is_grad_enabled() and (
            y.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            # One Newton step taken with the graph: its value is the root, its gradient is the
            # implicit function theorem's, dx = (dy - df) / f'(x).
            with torch.no_grad():
                log_slope = self._log_derivative(x)
            x = implicit_step(x, self._map(x) - y, log_slope)
        return x

    # The family mixin gives the maths for a network; the element-wise class its network.
    def network(self):
        raise NotImplementedError

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return self._map_with(x, self.network())

    def _log_derivative(self, x: torch.Tensor) -> torch.Tensor:
        return self._log_derivative_with(x, self.network())

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        return self._solve_with(y, self.network())
