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
    constrained_map_and_log_derivative,
    constrained_map_and_slope,
    constrained_range,
)
from ..numerics import bracket_increasing, solve_increasing, solver_tolerance
from ..parametrizations import CONSTRAINED_PARAMETRIZATIONS, initial_constrained_network
from ..positivity import POSITIVITY
from ..validation import check_positive_int, check_positive_number
from .base import resolve_tail
from .elementwise import MonotoneTransformModule
from .errors import preimage_or_error
from .family import Family, Weight, select_fields

__all__ = ["ConstrainedFamily", "ConstrainedMonotone", "constrained_monotone"]

_INITIAL_TAIL = 0.5
# Fields of the network with a trailing width dimension (the others end in the dimension).
_UNIT_FIELDS = (
    "hidden_weight",
    "log_hidden_weight",
    "hidden_bias",
    "output_weight",
    "log_output_weight",
)


def _raw_tail(value: torch.Tensor) -> torch.Tensor:
    """The raw parameter of a tail slope ``value`` > MIN_SLOPE (the inverse of
    :func:`_tail_slope`)."""
    excess = value - MIN_SLOPE
    return excess + torch.log(-torch.expm1(-excess))


def _tail_slope(raw: torch.Tensor) -> torch.Tensor:
    """s = MIN_SLOPE + softplus(raw): never below MIN_SLOPE, so never 0."""
    return MIN_SLOPE + nn.functional.softplus(raw)


class ConstrainedFamily(Family):
    r"""The constrained family (:mod:`~pyro_overparam_flows.transforms.family`): dimension d
    maps as

        :math:`f_d(x) = c_m \sum_{r=1}^m a_{dr}\,\sigma(w_{dr} x + b_{dr}) + s_d x + \beta_d,
        \qquad a_{dr}, w_{dr} > 0`

    (:func:`~pyro_overparam_flows.maps.constrained_map`).

    The weights are the raw positive weights ``raw_hidden_weight`` and ``raw_output_weight``,
    shape ``(dim, width)`` (w and a through ``positivity``). The free numbers are
    ``[b_1 .. b_m, beta, raw s]``: fields ``hidden_bias``, ``offset`` and, with a tail,
    ``raw_tail`` (s = MIN_SLOPE + softplus(raw s)).

    >>> family = ConstrainedFamily(8)
    >>> family.free_size, [name for name, _ in family.free_fields()]  # m biases, beta, s
    (10, ['hidden_bias', 'offset', 'raw_tail'])
    >>> transform = ConstrainedMonotone(2, width=8)
    >>> bool((transform.hidden_weight > 0).all() and (transform.output_weight > 0).all())
    True
    """

    name = "constrained"
    exposed = (
        "width",
        "activation",
        "positivity",
        "has_tail",
        "parametrization",
        "projection_floor",
        "multiplier",
        "free_size",
    )

    def __init__(
        self,
        width: int = 64,
        *,
        activation: str = "tanh",
        positivity: str = "softplus",
        tail: bool | None = None,
        parametrization: str = "standard",
        projection_floor: float = 1e-6,
    ):
        self.width = check_positive_int(width, "width")
        self.activation = lookup(SATURATING, activation, "activation")
        self.positivity = lookup(POSITIVITY, positivity, "positivity")
        setting = lookup(CONSTRAINED_PARAMETRIZATIONS, parametrization, "parametrization")
        self.parametrization = setting.name
        self.has_tail = resolve_tail(tail, setting)
        self.projection_floor = check_positive_number(projection_floor, "projection_floor")
        self.multiplier = setting.multiplier(self.width)

    @classmethod
    def from_version_0_1(cls, state: dict) -> ConstrainedFamily:
        """The family of a transform pickled by version 0.1, from its attributes."""
        return cls(
            state["width"],
            activation=state["activation"].name,
            positivity=state["positivity"].name,
            tail=state["has_tail"],
            parametrization=state["parametrization"],
            projection_floor=state["projection_floor"],
        )

    def free_fields(self) -> tuple[tuple[str, int | None], ...]:
        """``hidden_bias`` (m), ``offset`` and, with a tail, ``raw_tail``."""
        tail = (("raw_tail", None),) if self.has_tail else ()
        return (("hidden_bias", self.width), ("offset", None), *tail)

    def initial_weights(self, dim: int) -> tuple[dict[str, Weight], dict[str, torch.Tensor]]:
        """The parametrization's positive w and a, free b; beta = 0 and s = 0.5."""
        init = initial_constrained_network(
            dim, self.width, CONSTRAINED_PARAMETRIZATIONS[self.parametrization]
        )
        inverse, floor = self.positivity.inverse, self.projection_floor
        weights = {
            "raw_hidden_weight": Weight(inverse(init.hidden_weight, floor)),
            "raw_output_weight": Weight(inverse(init.output_weight, floor)),
        }
        free = {"hidden_bias": init.hidden_bias, "offset": init.hidden_bias.new_zeros(dim)}
        if self.has_tail:
            free["raw_tail"] = _raw_tail(torch.full_like(free["offset"], _INITIAL_TAIL))
        return weights, free

    def views(self):
        """``hidden_weight`` and ``output_weight``: the positive w and a, shape
        ``(dim, width)``."""
        value, floor = self.positivity.value, self.projection_floor
        return {
            "hidden_weight": lambda t: value(t["raw_hidden_weight"], floor),
            "output_weight": lambda t: value(t["raw_output_weight"], floor),
        }

    def project_(self, tensors) -> None:
        """Clamp the raw positive weights to ``projection_floor`` when ``positivity`` is
        ``"projected"`` (projected SGD); positivity holds by construction otherwise."""
        if self.positivity.projected:
            tensors["raw_hidden_weight"].clamp_(min=self.projection_floor)
            tensors["raw_output_weight"].clamp_(min=self.projection_floor)

    def network(self, tensors, free) -> ConstrainedNetwork:
        value, log_value = self.positivity.value, self.positivity.log_value
        floor = self.projection_floor
        raw_w, raw_a = tensors["raw_hidden_weight"], tensors["raw_output_weight"]
        raw_tail = free.get("raw_tail")
        tail = None if raw_tail is None else _tail_slope(raw_tail)
        return ConstrainedNetwork(
            value(raw_w, floor),
            log_value(raw_w, floor),
            free["hidden_bias"],
            value(raw_a, floor),
            log_value(raw_a, floor),
            tail,
            None if tail is None else torch.log(tail),
            free["offset"],
            self.multiplier,
        )

    def select(self, net: ConstrainedNetwork, index: torch.Tensor) -> ConstrainedNetwork:
        return select_fields(net, index, _UNIT_FIELDS)

    def map(self, x: torch.Tensor, net: ConstrainedNetwork) -> torch.Tensor:
        return constrained_map(x, net, self.activation)

    def log_derivative(self, x: torch.Tensor, net: ConstrainedNetwork) -> torch.Tensor:
        return constrained_log_derivative(x, net, self.activation)

    def map_and_log_derivative(
        self, x: torch.Tensor, net: ConstrainedNetwork
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """f(x) and log f'(x) from one pass where the native kernel applies (where it does
        not, only f(x))."""
        both = constrained_map_and_log_derivative(x, net, self.activation, fused_only=True)
        return (self.map(x, net), None) if both is None else both

    def solve(
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


class ConstrainedMonotone(MonotoneTransformModule):
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

    family_type = ConstrainedFamily

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
        family = ConstrainedFamily(
            width,
            activation=activation,
            positivity=positivity,
            tail=tail,
            parametrization=parametrization,
            projection_floor=projection_floor,
        )
        super().__init__(input_dim, family)
        if family.has_tail:
            # The order of version 0.1 (w, a, b, s, beta): parameters() and optimizer states
            # saved then follow it.
            self._parameters["offset"] = self._parameters.pop("offset")
        else:
            self.raw_tail = None

    @property
    def tail(self) -> torch.Tensor | None:
        """The tail slopes s >= MIN_SLOPE, shape ``(input_dim,)``, or None without a tail."""
        return None if self.raw_tail is None else _tail_slope(self.raw_tail)


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
