"""The unconstrained one-hidden-layer monotone flow (Shah et al. 2022, UMNN)."""

from __future__ import annotations

import torch
from torch import nn

from ..activations import HIDDEN, POSITIVE, lookup
from ..maps import (
    MIN_SLOPE,
    UnconstrainedNetwork,
    unconstrained_log_derivative,
    unconstrained_map,
)
from ..numerics import (
    QUADRATURE_RULES,
    RELU_INTEGRANDS,
    bracket_increasing,
    quadrature_rule,
    solve_increasing,
)
from ..parametrizations import (
    UNCONSTRAINED_PARAMETRIZATIONS,
    InitialNetwork,
    initial_unconstrained_network,
)
from .base import MonotoneTransformModule, check_width, preimage_or_error, resolve_tail

__all__ = [
    "DEFAULT_QUADRATURE_NODES",
    "UnconstrainedFamily",
    "UnconstrainedMonotone",
    "unconstrained_monotone",
]

#: Default K for each phi: the smallest K whose relative error is under 1e-6 on random O(1)
#: networks over x in [-4, 4], for every smooth activation and both rules, measured by
#: ``benchmarks/quadrature_accuracy.py``. ELU + 1 has a jump in its second derivative where
#: N = 0, so quadrature converges only like K^-3 there; softplus is smooth (spectral convergence).
DEFAULT_QUADRATURE_NODES = {"elu_plus_one": 192, "softplus": 24}

_INTEGRATIONS = ("auto", "exact", *QUADRATURE_RULES)


class UnconstrainedFamily:
    r"""The per-dimension weights, the quadrature rule and the mathematics of unconstrained maps,
    shared by the element-wise, autoregressive, coupling and conditional transforms (a mixin for
    :class:`torch.nn.Module` subclasses): dimension d maps as

        :math:`f_d(x) = \beta_d + \int_0^x \phi\big(N_d(t)\big)\,dt, \qquad
        N_d(t) = c_m \sum_{r=1}^m a_{dr}\,\rho(w_{dr} t + b_{dr})`

    (:func:`~pyro_overparam_flows.maps.unconstrained_map`).

    The hidden weights w and output weights a are of shape ``(dim, width)`` (a is a buffer for
    the presets whose output layer is not trained). The hidden biases b and the offset beta are
    parameters of the element-wise transform, and the output of a conditioner otherwise:
    :attr:`free_size` numbers per dimension, laid out as ``[b_1 .. b_m, beta]``. The tail, when
    there is one, is fixed: :math:`f' = s + (1 - s)\phi(N)` with
    :math:`s` = :data:`~pyro_overparam_flows.maps.MIN_SLOPE`.

    >>> transform = UnconstrainedMonotone(2, width=8)
    >>> isinstance(transform, UnconstrainedFamily), transform.free_size  # m biases, beta
    (True, 9)
    >>> transform.integration, transform.has_tail
    ('exact', True)
    """

    def _setup_family(
        self,
        dim: int,
        width: int,
        *,
        activation: str = "relu",
        phi: str = "elu_plus_one",
        integration: str = "auto",
        quadrature_nodes: int | None = None,
        parametrization: str = "standard",
        tail: bool | None = None,
    ) -> InitialNetwork:
        self.width = check_width(width)
        self.activation = lookup(HIDDEN, activation, "activation")
        self.phi = lookup(POSITIVE, phi, "phi")
        if integration not in _INTEGRATIONS:
            allowed = ", ".join(repr(k) for k in _INTEGRATIONS)
            raise ValueError(f"unknown integration {integration!r}; allowed values are {allowed}")
        exact_available = self.activation.name == "relu" and self.phi.name in RELU_INTEGRANDS
        if integration == "exact" and not exact_available:
            raise ValueError(
                f"integration='exact' needs activation='relu', got activation={activation!r}; "
                "use 'gauss-legendre' or 'clenshaw-curtis'"
            )
        if integration == "auto":
            integration = "exact" if exact_available else "gauss-legendre"
        if integration == "exact" and quadrature_nodes is not None:
            raise ValueError("quadrature_nodes applies to quadrature integration only, not 'exact'")
        self.integration = integration
        if integration != "exact":
            count = (
                DEFAULT_QUADRATURE_NODES[self.phi.name]
                if quadrature_nodes is None
                else quadrature_nodes
            )
            nodes, weights = quadrature_rule(integration, count, dtype=torch.get_default_dtype())
            # Derived from the rule, not saved: a checkpoint of another dtype cannot round them.
            self.register_buffer("quadrature_nodes", nodes, persistent=False)
            self.register_buffer("quadrature_weights", weights, persistent=False)
        setting = lookup(UNCONSTRAINED_PARAMETRIZATIONS, parametrization, "parametrization")
        self.parametrization = setting.name
        self.has_tail = resolve_tail(tail, setting)
        init = initial_unconstrained_network(dim, width, setting)
        self.multiplier = init.multiplier
        self.hidden_weight = nn.Parameter(init.hidden_weight)
        if init.train_output:
            self.output_weight = nn.Parameter(init.output_weight)
        else:
            self.register_buffer("output_weight", init.output_weight)
        return init

    def _apply(self, fn, *args, **kwargs):
        # Casting rounded nodes (float32 -> float64) would cost the rule its accuracy: recompute
        # them in float64 and cast once to the new dtype and device.
        super()._apply(fn, *args, **kwargs)
        if self.integration != "exact":
            nodes, weights = quadrature_rule(self.integration, self.quadrature_nodes.numel())
            like = self.quadrature_nodes
            self.quadrature_nodes = nodes.to(device=like.device, dtype=like.dtype)
            self.quadrature_weights = weights.to(device=like.device, dtype=like.dtype)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints of version 0.1.0 saved the quadrature rule: it is derived now.
        for name in ("quadrature_nodes", "quadrature_weights"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def free_size(self) -> int:
        """Numbers per dimension a conditioner provides: m hidden biases and the offset."""
        return self.width + 1

    def _initial_free(self, init: InitialNetwork) -> torch.Tensor:
        """The element-wise transform's initial b and beta (0), shape ``(dim, free_size)``."""
        offset = init.hidden_bias.new_zeros(len(init.hidden_bias), 1)
        return torch.cat([init.hidden_bias, offset], -1)

    def _assemble(self, hidden_bias: torch.Tensor, offset: torch.Tensor) -> UnconstrainedNetwork:
        return UnconstrainedNetwork(
            self.hidden_weight,
            hidden_bias,
            self.output_weight,
            offset,
            self.multiplier,
            MIN_SLOPE if self.has_tail else None,
        )

    def _network_from_free(self, free: torch.Tensor) -> UnconstrainedNetwork:
        """The network whose b, beta are ``free`` (shape ``(..., dim, free_size)``)."""
        return self._assemble(free[..., : self.width], free[..., self.width])

    def _quadrature(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.integration == "exact":
            return None
        return self.quadrature_nodes, self.quadrature_weights

    def _map_with(self, x: torch.Tensor, net: UnconstrainedNetwork) -> torch.Tensor:
        return unconstrained_map(x, net, self.activation, self.phi, self._quadrature())

    def _log_derivative_with(self, x: torch.Tensor, net: UnconstrainedNetwork) -> torch.Tensor:
        return unconstrained_log_derivative(x, net, self.activation, self.phi)

    def _solve_with(
        self,
        y: torch.Tensor,
        net: UnconstrainedNetwork,
        log_scale: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x with :math:`\\beta + e^{\\sigma} (f(x) - \\beta) = y` (:math:`\\sigma` =
        ``log_scale``, 0 if None; the offset is added after the scale), no gradient;
        ``columns`` name y's coordinates in error messages."""
        rho, phi, quadrature = self.activation, self.phi, self._quadrature()
        y = y.expand(torch.broadcast_shapes(y.shape, net.offset.shape))
        offset = net.offset
        target = y if log_scale is None else offset + (y - offset) * torch.exp(-log_scale)

        def value(x: torch.Tensor) -> torch.Tensor:
            return unconstrained_map(x, net, rho, phi, quadrature)

        def value_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return value(x), torch.exp(unconstrained_log_derivative(x, net, rho, phi))

        start = target - net.offset  # the flow starts as the identity plus offset
        lower, upper, found = bracket_increasing(value, target, start)
        x, converged = solve_increasing(value_and_slope, target, lower, upper, start)
        if net.tail is None:
            allowed = (
                "without a tail (tail=False, or a paper parametrization preset) the integrand's "
                "network can decay to -inf at an end, and the image is bounded there; pass "
                "tail=True for a bijection of the real line"
            )
        else:
            allowed = (
                f"the map overflows {y.dtype} before it reaches y: its parameters are too large"
            )
        hint = "" if quadrature is None else "; use more quadrature_nodes"
        return preimage_or_error(
            x, y, found, allowed, converged=converged, hint=hint, columns=columns
        )


class UnconstrainedMonotone(UnconstrainedFamily, MonotoneTransformModule):
    r"""
    An element-wise monotone bijection whose per-dimension map integrates a positive function
    of a free one-hidden-layer network (an *unconstrained* flow, as in UMNN and Shah et al. 2022),

        :math:`y_d = \beta_d + \int_0^{x_d} \phi\big(N_d(t)\big)\,dt, \qquad
        N_d(t) = c_m \sum_{r=1}^m a_{dr}\,\rho(w_{dr} t + b_{dr}),`

    with no constraint on :math:`a, w, b`. The log-Jacobian is exact,
    :math:`\sum_d \log \phi(N_d(x_d))`, whatever the integration rule.

    With :math:`\rho` = ReLU (the paper's model, the default) the integral is computed
    **exactly** in closed form, piece by piece between the kinks of N, for either phi. For
    other activations it is computed by a fixed K-node quadrature (Gauss-Legendre or
    Clenshaw-Curtis) evaluated in bounded blocks, whose forward pass accumulates the sums the
    gradients need instead of storing the hidden activations, so memory does not grow with K.
    The inverse is a batched safeguarded Newton solve.

    By default the map has a tail: :math:`f'(x) = s + (1 - s)\,\phi(N_d(x))` with
    :math:`s` = :data:`~pyro_overparam_flows.maps.MIN_SLOPE` (:math:`10^{-3}`), so
    :math:`f' \ge s` and the map is a bijection of the real line for every parameter value,
    while :math:`\phi(0) = 1` keeps the flow the identity at initialization. The paper's model
    (``tail=False``, and the default of the paper's presets) has no tail: where N tends to
    :math:`-\infty` (possible with ReLU or softplus hidden units) the integral converges and
    the image is bounded on that side, so the inverse raises a ValueError for values outside
    it, and the flow cannot be used forward as a prior or sampler that training moves.

    >>> import pyro.distributions as dist
    >>> base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    >>> transform = UnconstrainedMonotone(2, width=16)
    >>> pyro.module("my_transform", transform)  # doctest: +SKIP
    >>> flow = dist.TransformedDistribution(base, [transform])
    >>> flow.log_prob(flow.sample((5,))).shape
    torch.Size([5])

    :param int input_dim: the dimension D of the input.
    :param int width: the hidden width m.
    :param str activation: :math:`\rho`: ``"relu"`` (the paper's), ``"tanh"``, ``"sigmoid"``,
        ``"softplus"`` or ``"erf"``.
    :param str phi: :math:`\phi`: ``"elu_plus_one"`` (ELU(u) + 1, the paper's and UMNN's) or
        ``"softplus"`` (:math:`\log(1 + (e - 1) e^u)`, shifted so that :math:`\phi(0) = 1`).
    :param str integration: ``"auto"`` (exact for ReLU, else Gauss-Legendre), ``"exact"``
        (ReLU only), ``"gauss-legendre"`` or ``"clenshaw-curtis"`` (for ReLU a quadrature rule
        converges slowly, since the integrand has a kink at each unit's breakpoint).
    :param int quadrature_nodes: K for the quadrature rules; by default
        :data:`DEFAULT_QUADRATURE_NODES` for the chosen phi (192 for ELU + 1, 24 for softplus,
        each giving a relative error under 1e-6 on O(1) networks for :math:`|x| \le 4`). Accuracy
        falls once :math:`|x| / K` no longer resolves the network's features: far out
        (:math:`|x|` in the thousands) a network whose integrand decays is integrated poorly
        and the computed map may stop being monotone to working precision; the exact ReLU path
        has no such limit.
    :param str parametrization: ``"standard"``, ``"ntk"``, ``"mean_field"`` (width-aware: the
        flow starts as the identity, see :mod:`pyro_overparam_flows.parametrizations`) or the
        paper's presets ``"gaussian-sqrt(m)"`` and ``"gaussian-std"``, whose output layer is
        not trained.
    :param bool tail: the tail above (True), or the paper's model, possibly bounded (False);
        None (default) means True for the width-aware parametrizations and False for the
        paper's presets.

    References:

    [1] Kulin Shah, Amit Deshpande, Navin Goyal. Learning and Generalization in
    Overparameterized Normalizing Flows. AISTATS 2022. [arXiv:2106.10535]

    [2] Antoine Wehenkel, Gilles Louppe. Unconstrained Monotonic Neural Networks.
    NeurIPS 2019. [arXiv:1908.05164]
    """

    def __init__(
        self,
        input_dim: int,
        width: int = 64,
        *,
        activation: str = "relu",
        phi: str = "elu_plus_one",
        integration: str = "auto",
        quadrature_nodes: int | None = None,
        parametrization: str = "standard",
        tail: bool | None = None,
    ):
        super().__init__(input_dim)
        init = self._setup_family(
            input_dim,
            width,
            activation=activation,
            phi=phi,
            integration=integration,
            quadrature_nodes=quadrature_nodes,
            parametrization=parametrization,
            tail=tail,
        )
        self.hidden_bias = nn.Parameter(init.hidden_bias)
        self.offset = nn.Parameter(torch.zeros(input_dim))

    def network(self) -> UnconstrainedNetwork:
        """The current parameters as an :class:`~pyro_overparam_flows.maps.UnconstrainedNetwork`."""
        return self._assemble(self.hidden_bias, self.offset)


def unconstrained_monotone(input_dim: int, width: int = 64, **kwargs) -> UnconstrainedMonotone:
    """
    A helper function to create an :class:`UnconstrainedMonotone` object for consistency with
    other helpers inside :mod:`pyro.distributions.transforms`.

    >>> transform = unconstrained_monotone(3, width=32, activation="tanh")
    >>> transform(torch.zeros(4, 3)).shape
    torch.Size([4, 3])

    :param int input_dim: the dimension of the input variable.
    :param int width: the hidden width m (default 64).
    :param kwargs: the keyword arguments of :class:`UnconstrainedMonotone`.
    """
    return UnconstrainedMonotone(input_dim, width, **kwargs)
