"""The unconstrained one-hidden-layer monotone flow (Shah et al. 2022, UMNN)."""

from __future__ import annotations

import torch

from ..activations import HIDDEN, POSITIVE, lookup
from ..maps import (
    MIN_SLOPE,
    UnconstrainedNetwork,
    unconstrained_log_derivative,
    unconstrained_map,
    unconstrained_map_and_log_derivative,
)
from ..numerics import (
    QUADRATURE_RULES,
    RELU_INTEGRANDS,
    bracket_increasing,
    quadrature_rule,
    solve_increasing,
)
from ..parametrizations import UNCONSTRAINED_PARAMETRIZATIONS, initial_unconstrained_network
from ..validation import check_choice, check_positive_int
from .base import resolve_tail
from .elementwise import MonotoneTransformModule
from .errors import preimage_or_error
from .family import Family, Weight, select_fields

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


class UnconstrainedFamily(Family):
    r"""The unconstrained family (:mod:`~pyro_overparam_flows.transforms.family`): dimension d
    maps as

        :math:`f_d(x) = \beta_d + \int_0^x \phi\big(N_d(t)\big)\,dt, \qquad
        N_d(t) = c_m \sum_{r=1}^m a_{dr}\,\rho(w_{dr} t + b_{dr})`

    (:func:`~pyro_overparam_flows.maps.unconstrained_map`).

    The weights are the hidden weights w and output weights a, shape ``(dim, width)`` (a is
    not trained, a buffer, for the presets whose output layer is fixed); the quadrature rule of
    a smooth activation is a derived buffer. The free numbers are ``[b_1 .. b_m, beta]``:
    fields ``hidden_bias`` and ``offset``. The tail, when there is one, is fixed:
    :math:`f' = s + (1 - s)\phi(N)` with :math:`s` = :data:`~pyro_overparam_flows.maps.MIN_SLOPE`.

    >>> family = UnconstrainedFamily(8)
    >>> family.free_size, family.integration, family.has_tail  # m biases, beta
    (9, 'exact', True)
    >>> sorted(UnconstrainedFamily(8, activation="tanh").derived_buffers(torch.float64))
    ['quadrature_nodes', 'quadrature_weights']
    """

    name = "unconstrained"
    exposed = (
        "width",
        "activation",
        "phi",
        "integration",
        "has_tail",
        "parametrization",
        "multiplier",
        "free_size",
    )

    def __init__(
        self,
        width: int = 64,
        *,
        activation: str = "relu",
        phi: str = "elu_plus_one",
        integration: str = "auto",
        quadrature_nodes: int | None = None,
        parametrization: str = "standard",
        tail: bool | None = None,
    ):
        self.width = check_positive_int(width, "width")
        self.activation = lookup(HIDDEN, activation, "activation")
        self.phi = lookup(POSITIVE, phi, "phi")
        check_choice(integration, _INTEGRATIONS, "integration")
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
        self.node_count = None
        if integration != "exact":
            count = (
                DEFAULT_QUADRATURE_NODES[self.phi.name]
                if quadrature_nodes is None
                else quadrature_nodes
            )
            self.node_count = check_positive_int(count, "quadrature_nodes")
        setting = lookup(UNCONSTRAINED_PARAMETRIZATIONS, parametrization, "parametrization")
        self.parametrization = setting.name
        self.has_tail = resolve_tail(tail, setting)
        self.multiplier = setting.multiplier(self.width)

    @classmethod
    def from_version_0_1(cls, state: dict) -> UnconstrainedFamily:
        """The family of a transform pickled by version 0.1, from its attributes."""
        nodes = state["_buffers"].get("quadrature_nodes")
        return cls(
            state["width"],
            activation=state["activation"].name,
            phi=state["phi"].name,
            integration=state["integration"],
            quadrature_nodes=None if nodes is None else nodes.numel(),
            parametrization=state["parametrization"],
            tail=state["has_tail"],
        )

    def free_fields(self) -> tuple[tuple[str, int | None], ...]:
        """``hidden_bias`` (m) and ``offset``."""
        return (("hidden_bias", self.width), ("offset", None))

    def initial_weights(self, dim: int) -> tuple[dict[str, Weight], dict[str, torch.Tensor]]:
        """The parametrization's w, b, a (a untrained for the paper's presets); beta = 0."""
        init = initial_unconstrained_network(
            dim, self.width, UNCONSTRAINED_PARAMETRIZATIONS[self.parametrization]
        )
        weights = {
            "hidden_weight": Weight(init.hidden_weight),
            "output_weight": Weight(init.output_weight, init.train_output),
        }
        free = {"hidden_bias": init.hidden_bias, "offset": init.hidden_bias.new_zeros(dim)}
        return weights, free

    def derived_buffers(self, dtype, device=None) -> dict[str, torch.Tensor]:
        """The quadrature rule's nodes and weights on [0, 1] (none for the exact integral),
        computed in float64 and cast once, so a float64 flow gets the rule's full accuracy."""
        if self.integration == "exact":
            return {}
        nodes, weights = quadrature_rule(self.integration, self.node_count)
        return {
            "quadrature_nodes": nodes.to(device=device, dtype=dtype),
            "quadrature_weights": weights.to(device=device, dtype=dtype),
        }

    def network(self, tensors, free) -> UnconstrainedNetwork:
        quadrature = None
        if self.integration != "exact":
            quadrature = tensors["quadrature_nodes"], tensors["quadrature_weights"]
        return UnconstrainedNetwork(
            tensors["hidden_weight"],
            free["hidden_bias"],
            tensors["output_weight"],
            free["offset"],
            self.multiplier,
            MIN_SLOPE if self.has_tail else None,
            quadrature,
        )

    def select(self, net: UnconstrainedNetwork, index: torch.Tensor) -> UnconstrainedNetwork:
        return select_fields(net, index, ("hidden_weight", "hidden_bias", "output_weight"))

    def map(self, x: torch.Tensor, net: UnconstrainedNetwork) -> torch.Tensor:
        return unconstrained_map(x, net, self.activation, self.phi, net.quadrature)

    def log_derivative(self, x: torch.Tensor, net: UnconstrainedNetwork) -> torch.Tensor:
        return unconstrained_log_derivative(x, net, self.activation, self.phi)

    def map_and_log_derivative(
        self, x: torch.Tensor, net: UnconstrainedNetwork
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """f(x) and log f'(x) from one pass where the native kernel applies (where it does
        not, only f(x))."""
        both = unconstrained_map_and_log_derivative(x, net, self.activation, self.phi)
        return (self.map(x, net), None) if both is None else both

    def solve(
        self,
        y: torch.Tensor,
        net: UnconstrainedNetwork,
        log_scale: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x with :math:`\\beta + e^{\\sigma} (f(x) - \\beta) = y` (:math:`\\sigma` =
        ``log_scale``, 0 if None; the offset is added after the scale), no gradient;
        ``columns`` name y's coordinates in error messages."""
        rho, phi, quadrature = self.activation, self.phi, net.quadrature
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


class UnconstrainedMonotone(MonotoneTransformModule):
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

    family_type = UnconstrainedFamily

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
        family = UnconstrainedFamily(
            width,
            activation=activation,
            phi=phi,
            integration=integration,
            quadrature_nodes=quadrature_nodes,
            parametrization=parametrization,
            tail=tail,
        )
        super().__init__(input_dim, family)


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
