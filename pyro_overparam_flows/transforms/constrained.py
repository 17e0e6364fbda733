"""The constrained one-hidden-layer monotone flow (Shah et al. 2022, NAF/BNAF)."""

from __future__ import annotations

import torch
from torch import nn

from ..activations import SATURATING, lookup
from ..maps import (
    MIN_SLOPE,
    ConstrainedNetwork,
    constrained_log_derivative,
    constrained_map,
    constrained_map_and_slope,
    constrained_range,
)
from ..numerics import bracket_increasing, solve_increasing, solver_tolerance
from ..parametrizations import (
    CONSTRAINED_PARAMETRIZATIONS,
    InitialNetwork,
    initial_constrained_network,
)
from ..positivity import POSITIVITY
from .base import MonotoneTransformModule, check_width, preimage_or_error, resolve_tail

__all__ = ["ConstrainedFamily", "ConstrainedMonotone", "constrained_monotone"]

_INITIAL_TAIL = 0.5


def _raw_tail(value: torch.Tensor) -> torch.Tensor:
    """The raw parameter of a tail slope ``value`` > MIN_SLOPE (the inverse of
    :func:`_tail_slope`)."""
    excess = value - MIN_SLOPE
    return excess + torch.log(-torch.expm1(-excess))


def _tail_slope(raw: torch.Tensor) -> torch.Tensor:
    """s = MIN_SLOPE + softplus(raw): never below MIN_SLOPE, so never 0."""
    return MIN_SLOPE + nn.functional.softplus(raw)


class ConstrainedFamily:
    r"""The per-dimension weights and the mathematics of constrained maps, shared by the
    element-wise, autoregressive, coupling and conditional transforms (a mixin for
    :class:`torch.nn.Module` subclasses): dimension d maps as

        :math:`f_d(x) = c_m \sum_{r=1}^m a_{dr}\,\sigma(w_{dr} x + b_{dr}) + s_d x + \beta_d,
        \qquad a_{dr}, w_{dr} > 0`

    (:func:`~pyro_overparam_flows.maps.constrained_map`).

    The positive weights w and a are parameters of shape ``(dim, width)``. The hidden biases b,
    the tail s and the offset beta are parameters of the element-wise transform, and the output
    of a conditioner otherwise: :attr:`free_size` numbers per dimension, laid out as
    ``[b_1 .. b_m, beta, raw s]`` (``raw s`` only with a tail; s = MIN_SLOPE + softplus(raw s)).

    >>> transform = ConstrainedMonotone(2, width=8)
    >>> isinstance(transform, ConstrainedFamily), transform.free_size  # m biases, beta, s
    (True, 10)
    >>> bool((transform.hidden_weight > 0).all() and (transform.output_weight > 0).all())
    True
    """

    def _setup_family(
        self,
        dim: int,
        width: int,
        *,
        activation: str = "tanh",
        positivity: str = "softplus",
        tail: bool | None = None,
        parametrization: str = "standard",
        projection_floor: float = 1e-6,
    ) -> InitialNetwork:
        self.width = check_width(width)
        self.activation = lookup(SATURATING, activation, "activation")
        self.positivity = lookup(POSITIVITY, positivity, "positivity")
        setting = lookup(CONSTRAINED_PARAMETRIZATIONS, parametrization, "parametrization")
        tail = resolve_tail(tail, setting)
        if not (
            isinstance(projection_floor, float | int)
            and not isinstance(projection_floor, bool)
            and projection_floor > 0
        ):
            raise ValueError(
                f"projection_floor must be a positive number, got {projection_floor!r}"
            )
        self.has_tail = tail
        self.parametrization = setting.name
        self.projection_floor = float(projection_floor)
        init = initial_constrained_network(dim, width, setting)
        self.multiplier = init.multiplier
        floor = self.projection_floor
        self.raw_hidden_weight = nn.Parameter(self.positivity.inverse(init.hidden_weight, floor))
        self.raw_output_weight = nn.Parameter(self.positivity.inverse(init.output_weight, floor))
        return init

    @property
    def hidden_weight(self) -> torch.Tensor:
        """The positive hidden weights w, shape ``(input_dim, width)``."""
        return self.positivity.value(self.raw_hidden_weight, self.projection_floor)

    @property
    def output_weight(self) -> torch.Tensor:
        """The positive output weights a, shape ``(input_dim, width)``."""
        return self.positivity.value(self.raw_output_weight, self.projection_floor)

    @property
    def free_size(self) -> int:
        """Numbers per dimension a conditioner provides: m hidden biases, the offset, the tail."""
        return self.width + 1 + int(self.has_tail)

    def _initial_free(self, init: InitialNetwork) -> torch.Tensor:
        """The element-wise initial b, beta (0) and raw s, shape ``(dim, free_size)``."""
        columns = [init.hidden_bias, init.hidden_bias.new_zeros(len(init.hidden_bias), 1)]
        if self.has_tail:
            columns.append(_raw_tail(torch.full_like(columns[1], _INITIAL_TAIL)))
        return torch.cat(columns, -1)

    @torch.no_grad()
    def project_(self):
        """Clamp the raw positive weights to ``projection_floor`` (projected SGD).

        Call after each optimizer step when ``positivity="projected"``; a no-op otherwise, where
        positivity holds by construction.
        """
        if self.positivity.projected:
            self.raw_hidden_weight.clamp_(min=self.projection_floor)
            self.raw_output_weight.clamp_(min=self.projection_floor)
        return self

    def _assemble(
        self,
        hidden_bias: torch.Tensor,
        raw_tail: torch.Tensor | None,
        offset: torch.Tensor,
    ) -> ConstrainedNetwork:
        value, log_value, floor = (
            self.positivity.value,
            self.positivity.log_value,
            self.projection_floor,
        )
        raw_w, raw_a = self.raw_hidden_weight, self.raw_output_weight
        tail = None if raw_tail is None else _tail_slope(raw_tail)
        return ConstrainedNetwork(
            value(raw_w, floor),
            log_value(raw_w, floor),
            hidden_bias,
            value(raw_a, floor),
            log_value(raw_a, floor),
            tail,
            None if tail is None else torch.log(tail),
            offset,
            self.multiplier,
        )

    def _network_from_free(self, free: torch.Tensor) -> ConstrainedNetwork:
        """The network whose b, beta, s are ``free`` (shape ``(..., dim, free_size)``)."""
        m = self.width
        raw_tail = free[..., m + 1] if self.has_tail else None
        return self._assemble(free[..., :m], raw_tail, free[..., m])

    def _map_with(self, x: torch.Tensor, net: ConstrainedNetwork) -> torch.Tensor:
        return constrained_map(x, net, self.activation)

    def _log_derivative_with(self, x: torch.Tensor, net: ConstrainedNetwork) -> torch.Tensor:
        return constrained_log_derivative(x, net, self.activation)

    def _solve_with(
        self,
        y: torch.Tensor,
        net: ConstrainedNetwork,
        log_scale: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x with :math:`\\beta + e^{\\sigma} (f(x) - \\beta) = y` (:math:`\\sigma` =
        ``log_scale``, 0 if None; the offset is added after the scale), no gradient;
        ``columns`` name y's coordinates in error messages."""
        sigma = self.activation
        low, high = constrained_range(net, sigma)
        y = y.expand(torch.broadcast_shapes(y.shape, low.shape))
        scale = None if log_scale is None else torch.exp(log_scale)
        offset = net.offset
        target = y if scale is None else offset + (y - offset) / scale

        # The image's ends in y's units, for messages.
        if scale is None:
            bounds = (low, high)
        else:
            bounds = (offset + (low - offset) * scale, offset + (high - offset) * scale)
        if net.tail is None:
            # The open interval (low, high), widened by the solver's tolerance: values the
            # forward map rounds onto a bound (float32 at |x| ~ 40) still invert.
            slack = solver_tolerance(target)
            inside = (target > low - slack) & (target < high + slack)
            allowed = (
                "without a tail the range is the open interval (offset + c*sum(a)*"
                f"{sigma.lower:g}, offset + c*sum(a)*{sigma.upper:g}) in each dimension"
                + ("" if scale is None else ", the sums times the dimension's scale")
            )
            preimage_or_error(y, y, inside, allowed, bounds, columns=columns)
            # Out-of-range targets are swapped for a reachable one so they do not spend the
            # budget.
            target = torch.where(inside, target, (low + high) / 2.0)
        else:
            inside = torch.ones_like(y, dtype=torch.bool)
            allowed = (
                f"the map overflows {y.dtype} before it reaches y: its parameters are too large"
            )
        lower, upper, found = bracket_increasing(
            lambda x: constrained_map(x, net, sigma), target, torch.zeros_like(y)
        )
        if net.tail is not None:
            # s x + low <= f(x) <= s x + high also brackets the root: keep the tighter ends
            # (the tail's alone is wide when s is small, and infinite if it overflows).
            tail_lower, tail_upper = (target - high) / net.tail, (target - low) / net.tail
            lower = torch.where(torch.isfinite(tail_lower), torch.maximum(lower, tail_lower), lower)
            upper = torch.where(torch.isfinite(tail_upper), torch.minimum(upper, tail_upper), upper)
        x, converged = solve_increasing(
            lambda x: constrained_map_and_slope(x, net, sigma), target, lower, upper
        )
        return preimage_or_error(
            x, y, found & inside, allowed, bounds, converged=converged, columns=columns
        )


class ConstrainedMonotone(ConstrainedFamily, MonotoneTransformModule):
    r"""
    An element-wise monotone bijection whose per-dimension map is a one-hidden-layer network
    with positive weights (a *constrained* flow, as in NAF/BNAF and Shah et al. 2022),

        :math:`y_d = c_m \sum_{r=1}^m a_{dr}\,\sigma(w_{dr} x_d + b_{dr}) + s_d x_d + \beta_d,`

    with :math:`a_{dr}, w_{dr} > 0`, :math:`\sigma` = tanh or sigmoid, a linear tail
    :math:`s_d \ge` :data:`~pyro_overparam_flows.maps.MIN_SLOPE` and an offset
    :math:`\beta_d`. The log-Jacobian is
    :math:`\sum_d \log\big(c_m \sum_r a_{dr} w_{dr} \sigma'(w_{dr} x_d + b_{dr}) + s_d\big)`,
    evaluated in log space (finite where :math:`\sigma'` underflows, e.g. at
    :math:`x = \pm 10^4` in float32).

    The forward direction is the network map; the inverse is a batched safeguarded Newton solve.
    With a tail (the default) the map is a bijection of the real line for every parameter value:
    :math:`s_d = 10^{-3} + \mathrm{softplus}(\cdot)` never reaches 0. Without
    (``tail=False``, and the default of the paper's presets) it is the paper's exact model,
    whose image is the bounded interval
    :math:`\beta + c_m \sum_r a_r (\sigma(-\infty), \sigma(\infty))`; the inverse raises a
    ValueError for values outside it, and the flow cannot be used forward as a sampler.

    Together with :class:`~pyro.distributions.TransformedDistribution` this gives a flow for
    variational inference (sample through the forward direction) or for density estimation
    (score data through the forward direction, i.e. use ``.inv``):

    >>> import pyro.distributions as dist
    >>> base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    >>> transform = ConstrainedMonotone(2, width=16)
    >>> pyro.module("my_transform", transform)  # doctest: +SKIP
    >>> flow = dist.TransformedDistribution(base, [transform])
    >>> flow.log_prob(flow.sample((5,))).shape
    torch.Size([5])
    >>> density = dist.TransformedDistribution(base, [transform.inv])
    >>> density.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])

    :param int input_dim: the dimension D of the input.
    :param int width: the hidden width m.
    :param str activation: :math:`\sigma`, ``"tanh"`` (the paper's) or ``"sigmoid"``.
    :param str positivity: how :math:`w, a > 0` is kept: ``"softplus"``, ``"exp"``,
        ``"square"`` of a free parameter, or ``"projected"`` (raw values kept positive by
        :meth:`project_` after each optimizer step, the paper's projected SGD).
    :param bool tail: include the linear tail :math:`s_d = 10^{-3} + \mathrm{softplus}(\cdot)`
        (initially 0.5), or not (the paper's bounded model); None (default) means True for the
        width-aware parametrizations and False for the paper's presets.
    :param str parametrization: ``"standard"``, ``"ntk"``, ``"mean_field"`` (width-aware, see
        :mod:`pyro_overparam_flows.parametrizations`) or the paper's presets
        ``"standard-normal"`` and ``"sqrt-(m)"``.
    :param float projection_floor: the clamp of projected SGD (the paper's 1e-6).

    References:

    [1] Kulin Shah, Amit Deshpande, Navin Goyal. Learning and Generalization in
    Overparameterized Normalizing Flows. AISTATS 2022. [arXiv:2106.10535]

    [2] Chin-Wei Huang, David Krueger, Alexandre Lacoste, Aaron Courville. Neural
    Autoregressive Flows. ICML 2018. [arXiv:1804.00779]
    """

    def __init__(
        self,
        input_dim: int,
        width: int = 64,
        *,
        activation: str = "tanh",
        positivity: str = "softplus",
        tail: bool | None = None,
        parametrization: str = "standard",
        projection_floor: float = 1e-6,
    ):
        super().__init__(input_dim)
        init = self._setup_family(
            input_dim,
            width,
            activation=activation,
            positivity=positivity,
            tail=tail,
            parametrization=parametrization,
            projection_floor=projection_floor,
        )
        self.hidden_bias = nn.Parameter(init.hidden_bias)
        tail_value = torch.full((input_dim,), _INITIAL_TAIL)
        self.raw_tail = nn.Parameter(_raw_tail(tail_value)) if self.has_tail else None
        self.offset = nn.Parameter(torch.zeros(input_dim))

    @property
    def tail(self) -> torch.Tensor | None:
        """The tail slopes s >= MIN_SLOPE, shape ``(input_dim,)``, or None without a tail."""
        return None if self.raw_tail is None else _tail_slope(self.raw_tail)

    def network(self) -> ConstrainedNetwork:
        """The current parameters as a :class:`~pyro_overparam_flows.maps.ConstrainedNetwork`."""
        return self._assemble(self.hidden_bias, self.raw_tail, self.offset)


def constrained_monotone(input_dim: int, width: int = 64, **kwargs) -> ConstrainedMonotone:
    """
    A helper function to create a :class:`ConstrainedMonotone` object for consistency with
    other helpers inside :mod:`pyro.distributions.transforms`.

    >>> transform = constrained_monotone(3, width=32, activation="sigmoid")
    >>> transform(torch.zeros(4, 3)).shape
    torch.Size([4, 3])

    :param int input_dim: the dimension of the input variable.
    :param int width: the hidden width m (default 64).
    :param kwargs: the keyword arguments of :class:`ConstrainedMonotone`.
    """
    return ConstrainedMonotone(input_dim, width, **kwargs)
