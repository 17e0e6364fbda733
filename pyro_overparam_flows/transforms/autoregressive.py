"""The autoregressive structure and its conditional twin, and the autoregressive monotone
flows of both families (Pyro-named classes and helpers)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn

from ..validation import check_positive_int
from .conditioners import (
    ConditionalFlow,
    ConditionedFlow,
    Conditioning,
    LinearAutoregressiveNN,
    WithContext,
    conditioner_size,
    default_hidden_dims,
    masked_network,
    start_family_,
)
from .constrained import ConstrainedFamily
from .family import Family
from .unconstrained import UnconstrainedFamily

__all__ = [
    "ConditionalConstrainedMonotoneAutoregressive",
    "ConditionalMonotoneAutoregressive",
    "ConditionalUnconstrainedMonotoneAutoregressive",
    "ConstrainedMonotoneAutoregressive",
    "MonotoneAutoregressive",
    "UnconstrainedMonotoneAutoregressive",
    "conditional_constrained_monotone_autoregressive",
    "conditional_unconstrained_monotone_autoregressive",
    "constrained_monotone_autoregressive",
    "monotone_autoregressive",
    "unconstrained_monotone_autoregressive",
]


def _check_order(network: nn.Module, pyro_name: str) -> None:
    if not isinstance(getattr(network, "permutation", None), torch.Tensor):
        raise ValueError(
            "autoregressive_nn must expose its variable order as a tensor attribute "
            f"`permutation`, as Pyro's {pyro_name} does; got {type(network).__name__}"
        )


def _set_column(x: torch.Tensor, index: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """x with its coordinate ``index`` replaced by ``column`` (shape ``(..., 1)``), out of place,
    the batch shapes broadcast."""
    batch = torch.broadcast_shapes(x.shape[:-1], column.shape[:-1])
    return x.expand(batch + x.shape[-1:]).index_copy(-1, index, column.expand(batch + (1,)))


class MonotoneAutoregressive(ConditionedFlow):
    r"""The autoregressive structure: ``family``'s maps with their free numbers given by the
    masked network ``autoregressive_nn`` (``self.arn``), whose ``permutation`` is the order.

    Dimension d maps as :math:`y_d = \beta_d + e^{\sigma_d} (f_d(x_d) - \beta_d)`, the
    family's map :math:`f_d` with its hidden biases, offset :math:`\beta_d` (and tail) and the
    log-scale :math:`\sigma_d` (0 with ``scale=False``) given by the conditioner from
    :math:`x_{<d}` in its variable order: the Jacobian is triangular in that order.

    >>> from pyro_overparam_flows import unconstrained_monotone_autoregressive
    >>> transform = unconstrained_monotone_autoregressive(3, width=4)
    >>> isinstance(transform, MonotoneAutoregressive), transform.autoregressive
    (True, True)
    """

    autoregressive = True

    def __init__(
        self,
        input_dim: int,
        family: Family,
        autoregressive_nn: nn.Module,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
        parent: nn.Module | None = None,
    ):
        super().__init__(input_dim, family, scale=scale)
        _check_order(autoregressive_nn, "AutoRegressiveNN")
        self._bind("arn", autoregressive_nn, parent)
        if parent is None:
            start_family_(self, input_dim, autoregressive_nn, init_conditioner)

    def _condition_on(self, x: torch.Tensor) -> Conditioning:
        out = self.arn(x)
        # Pyro's layout is (..., P, D); a network with numbers_last gives (..., D, P).
        numbers_last = getattr(self.arn, "numbers_last", False)
        expected = (self.conditioner_size, self.input_dim)
        if numbers_last:
            expected = expected[::-1]
        if not isinstance(out, torch.Tensor) or tuple(out.shape[-2:]) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            layout = (
                "(numbers per dimension last)"
                if numbers_last
                else f"(numbers per dimension, input_dim), as AutoRegressiveNN(input_dim, "
                f"hidden_dims, param_dims=[{self.conditioner_size}]) does"
            )
            raise ValueError(
                f"the autoregressive network must return one tensor of shape (..., "
                f"{expected[0]}, {expected[1]}) {layout}; got {got}"
            )
        if numbers_last:  # each dimension's numbers already contiguous
            return self._conditioning(out)
        # Each dimension's numbers contiguous: the kernels read the hidden biases in place.
        return self._conditioning(out.transpose(-1, -2).contiguous())

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        conditioning = self._condition_on(x)
        self._cache.conditioning = x, conditioning
        y = self._apply_map_keeping_log_slope(x, conditioning, x)
        return self._finite(y, "forward map", conditioning.named())

    def map_given(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r"""Each dimension's map at t with the conditioner fed x: :math:`f_d(t_d; x_{<d})`, of
        the shape of x (t broadcasts against it); the forward map when t is x. Reuses the
        conditioner's output of a forward call on the same x.

        >>> from pyro_overparam_flows import unconstrained_monotone_autoregressive
        >>> transform = unconstrained_monotone_autoregressive(3, width=8)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(transform.map_given(x, x), transform(x))
        True
        """
        self._cache.refresh(self)
        self._check(x, "x")
        self._check(t, "t")
        try:
            t = torch.broadcast_to(t, x.shape)
        except RuntimeError:
            raise ValueError(
                f"t of shape {tuple(t.shape)} does not broadcast to x's shape {tuple(x.shape)}"
            ) from None
        return self._apply_map(t, self._conditioning_for(x))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""log-Jacobian of the triangular map: :math:`\sum_d \log f_d'(x_d; x_{<d})`."""
        self._cache.refresh(self)
        self._check(x, "x")
        conditioning = self._conditioning_for(x)
        log_det = self._log_slope(x, conditioning, key=x).sum(-1)
        return self._finite(log_det, "log-Jacobian", conditioning.named())

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        graph = self._needs_graph(y)
        order = self.arn.permutation
        x = torch.zeros_like(y)
        with torch.set_grad_enabled(graph):
            for position in range(self.input_dim):
                index = order[position : position + 1]
                # The conditioner sees the coordinates solved so far, with their graph, so the
                # Newton step of the solve carries the gradient through x_<d as well.
                conditioning = self._condition_on(x)
                column = Conditioning(
                    self.family.select(conditioning.network, index),
                    None
                    if conditioning.log_scale is None
                    else conditioning.log_scale.index_select(-1, index),
                )
                solved = self._solve_given(y.index_select(-1, index), column, index)
                x = _set_column(x, index, solved)
        # The last pass saw every x_<d, so its conditioning is the one of the final x.
        self._cache.conditioning = x, conditioning
        return x


class ConditionalMonotoneAutoregressive(ConditionalFlow):
    """The conditional autoregressive structure: ``family``'s maps with their free numbers given
    by a conditional masked network ``self.nn`` (Pyro's
    :class:`~pyro.nn.ConditionalAutoRegressiveNN`) of the preceding coordinates and a context.
    :meth:`condition` gives the :class:`MonotoneAutoregressive` of a context.

    >>> from pyro_overparam_flows import conditional_unconstrained_monotone_autoregressive
    >>> transform = conditional_unconstrained_monotone_autoregressive(3, 2, width=4)
    >>> isinstance(transform, ConditionalMonotoneAutoregressive)
    True
    >>> isinstance(transform.condition(torch.zeros(2)), MonotoneAutoregressive)
    True
    """

    def __init__(
        self,
        input_dim: int,
        family: Family,
        autoregressive_nn: nn.Module,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
    ):
        _check_order(autoregressive_nn, "ConditionalAutoRegressiveNN")
        super().__init__(
            input_dim,
            family,
            autoregressive_nn,
            input_dim,
            scale=scale,
            init_conditioner=init_conditioner,
        )

    def condition(self, context: torch.Tensor) -> MonotoneAutoregressive:
        """The flow for ``context`` (shape ``(..., context_dim)``), sharing this module's
        parameters; its batch shape broadcasts against the input's."""
        bound = WithContext(self.nn, context, self._dtype())
        return MonotoneAutoregressive(
            self.input_dim, self.family, bound, scale=self.scale, parent=self
        )


class _FromOptions:
    """The Pyro-named flows' constructor: the structure with a family of type ``family_type``
    built from the width and the keyword options."""

    family_type: type[Family]

    def __init__(
        self,
        input_dim: int,
        autoregressive_nn: nn.Module,
        width: int = 64,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
        **options: Any,
    ):
        super().__init__(  # type: ignore[call-arg]
            input_dim,
            self.family_type(width, **options),
            autoregressive_nn,
            scale=scale,
            init_conditioner=init_conditioner,
        )


_REFERENCES = """
    References:

    [1] Kulin Shah, Amit Deshpande, Navin Goyal. Learning and Generalization in
    Overparameterized Normalizing Flows. AISTATS 2022. [arXiv:2106.10535]

    [2] Chin-Wei Huang, David Krueger, Alexandre Lacoste, Aaron Courville. Neural
    Autoregressive Flows. ICML 2018. [arXiv:1804.00779]

    [3] Antoine Wehenkel, Gilles Louppe. Unconstrained Monotonic Neural Networks.
    NeurIPS 2019. [arXiv:1908.05164]

    [4] Mathieu Germain, Karol Gregor, Iain Murray, Hugo Larochelle. MADE: Masked Autoencoder
    for Distribution Estimation. ICML 2015. [arXiv:1502.03509]
"""


class ConstrainedMonotoneAutoregressive(_FromOptions, MonotoneAutoregressive):
    r"""
    An autoregressive flow whose map of each dimension is a constrained one-hidden-layer network
    (positive weights, as in NAF and Shah et al. 2022) of :math:`x_d`, with hidden biases, offset
    and tail given by a masked network of the preceding coordinates:

        :math:`y_d = c_m \sum_{r=1}^m a_{dr}\,\sigma\big(w_{dr} x_d + h_{dr}(x_{<d})\big)
        + s_d(x_{<d})\,x_d + \beta_d(x_{<d}),`

    with :math:`a, w > 0` per dimension and :math:`h_d`, :math:`\beta_d` and the tail
    :math:`s_d = 10^{-3} + \mathrm{softplus}(\cdot)` given by ``autoregressive_nn`` (no tail
    with ``tail=False`` or a paper preset: a bounded image); with ``scale=True`` (default) the
    terms other than :math:`\beta_d` are multiplied by :math:`e^{\sigma_d(x_{<d})}`,
    :math:`\sigma_d = 5 \tanh(v_d / 5)` of one more output :math:`v_d`, which lets the
    conditioner set each dimension's spread directly and :math:`\beta_d` its location. The
    Jacobian is triangular in the network's variable order and
    :math:`\log|\det J| = \sum_d \log \partial y_d / \partial x_d`, computed in log space. The
    forward direction is one pass of the network; the inverse solves one dimension per pass
    (``input_dim`` passes of the network and of the batched Newton solver).

    At initialization (``init_conditioner=True``) the network's last layer has zero weights and
    biases equal to the element-wise initialization of the chosen parametrization, so the flow
    starts as :class:`~pyro_overparam_flows.ConstrainedMonotone` and its statistics do not drift
    with the width.

    >>> import pyro.distributions as dist
    >>> from pyro.nn import AutoRegressiveNN
    >>> input_dim, width = 3, 16
    >>> arn = AutoRegressiveNN(input_dim, [30], param_dims=[width + 3])
    >>> transform = ConstrainedMonotoneAutoregressive(input_dim, arn, width)
    >>> pyro.module("my_transform", transform)  # doctest: +SKIP
    >>> base = dist.Normal(torch.zeros(input_dim), torch.ones(input_dim)).to_event(1)
    >>> flow = dist.TransformedDistribution(base, [transform])
    >>> flow.log_prob(flow.sample((5,))).shape
    torch.Size([5])

    :param int input_dim: the dimension D of the input.
    :param torch.nn.Module autoregressive_nn: a masked network returning, for x of shape
        ``(..., D)``, a tensor of shape ``(..., P, D)`` with P = ``width + 3`` (one less without
        tail, one less without scale): Pyro's ``AutoRegressiveNN(D, hidden_dims,
        param_dims=[P])``. Its ``permutation`` is the order.
    :param int width: the hidden width m of each dimension's network.
    :param bool scale: multiply each dimension's map, less its offset, by
        :math:`e^{\sigma_d(x_{<d})}` from a last conditioner output (the affine part of MAF; set
        False for the paper's model).
    :param bool init_conditioner: start the network's last layer as described above.
    :param options: ``activation``, ``positivity``, ``tail``, ``parametrization`` and
        ``projection_floor``, as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = ConstrainedFamily


class UnconstrainedMonotoneAutoregressive(_FromOptions, MonotoneAutoregressive):
    r"""
    An autoregressive flow whose map of each dimension integrates a positive function of a free
    one-hidden-layer network of :math:`(t, x_{<d})`: the multi-dimensional model of Shah et al.
    (2022) and UMNN,

        :math:`y_d = \beta_d(x_{<d}) + \int_0^{x_d} \phi\big(N_d(t; x_{<d})\big)\,dt, \qquad
        N_d(t; x_{<d}) = c_m \sum_{r=1}^m a_{dr}\,\rho\big(w_{dr} t + h_{dr}(x_{<d})\big),`

    with free :math:`a, w` per dimension and :math:`(h_d, \beta_d)` the output of
    ``autoregressive_nn``. By default the integrand has a tail, :math:`s + (1 - s)\phi` with
    :math:`s = 10^{-3}`, so the map is onto the real line for every parameter value
    (``tail=False`` and the paper's presets: :math:`\phi` alone, the paper's model, whose image
    can be bounded). With ``scale=True`` (default) the integral is multiplied by
    :math:`e^{\sigma_d(x_{<d})}`, :math:`\sigma_d = 5 \tanh(v_d / 5)` of one more output
    :math:`v_d` (``scale=False``, with ``tail=False``, is the paper's model). The Jacobian is
    triangular in the network's variable order and :math:`\log|\det J| = \sum_d \log
    \partial y_d / \partial x_d`, exact whatever the integration rule. With ReLU (the default)
    the integral is exact in closed form; otherwise a K-node quadrature whose memory does not
    grow with K. The inverse solves one dimension per
    pass (``input_dim`` passes of the network and of the batched Newton solver).

    At initialization (``init_conditioner=True``) the network's last layer has zero weights and
    biases equal to the element-wise initialization, whose paired units cancel: the flow starts
    as the identity (to rounding) at every width.

    >>> import pyro.distributions as dist
    >>> from pyro.nn import AutoRegressiveNN
    >>> input_dim, width = 3, 16
    >>> arn = AutoRegressiveNN(input_dim, [30], param_dims=[width + 2])
    >>> transform = UnconstrainedMonotoneAutoregressive(input_dim, arn, width)
    >>> x = torch.randn(5, input_dim)
    >>> torch.allclose(transform(x), x)  # the identity at initialization
    True
    >>> base = dist.Normal(torch.zeros(input_dim), torch.ones(input_dim)).to_event(1)
    >>> flow = dist.TransformedDistribution(base, [transform])
    >>> flow.log_prob(flow.sample((5,))).shape
    torch.Size([5])

    :param int input_dim: the dimension D of the input.
    :param torch.nn.Module autoregressive_nn: a masked network returning, for x of shape
        ``(..., D)``, a tensor of shape ``(..., P, D)`` with P = ``width + 2`` (``width + 1``
        with ``scale=False``): Pyro's ``AutoRegressiveNN(D, hidden_dims, param_dims=[P])``. Its
        ``permutation`` is the order.
    :param int width: the hidden width m of each dimension's integrand network.
    :param bool scale: multiply each dimension's integral by :math:`e^{\sigma_d(x_{<d})}` from
        a last conditioner output.
    :param bool init_conditioner: start the network's last layer as described above.
    :param options: ``activation``, ``phi``, ``integration``, ``quadrature_nodes``,
        ``parametrization`` and ``tail``, as for
        :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = UnconstrainedFamily


class ConditionalConstrainedMonotoneAutoregressive(_FromOptions, ConditionalMonotoneAutoregressive):
    r"""
    The conditional version of :class:`ConstrainedMonotoneAutoregressive`: the hidden biases,
    offset and tail of dimension d are a masked network of :math:`(x_{<d}, z)` for a context z,
    for conditional density estimation and amortized variational inference.
    :meth:`condition` binds a context and returns the transform.

    >>> import pyro.distributions as dist
    >>> from pyro.nn import ConditionalAutoRegressiveNN
    >>> input_dim, context_dim, width = 3, 2, 16
    >>> arn = ConditionalAutoRegressiveNN(input_dim, context_dim, [30], param_dims=[width + 3])
    >>> transform = ConditionalConstrainedMonotoneAutoregressive(input_dim, arn, width)
    >>> base = dist.Normal(torch.zeros(input_dim), torch.ones(input_dim)).to_event(1)
    >>> flow = dist.ConditionalTransformedDistribution(base, [transform])
    >>> z = torch.randn(context_dim)
    >>> flow.condition(z).sample((5,)).shape
    torch.Size([5, 3])

    :param int input_dim: the dimension D of the input.
    :param torch.nn.Module autoregressive_nn: Pyro's ``ConditionalAutoRegressiveNN(D,
        context_dim, hidden_dims, param_dims=[P])`` with P = ``width + 3`` (one less without
        tail, one less without scale), or a network with the same call signature and output.
    :param int width: the hidden width m of each dimension's network.
    :param bool scale: as for :class:`ConstrainedMonotoneAutoregressive`.
    :param bool init_conditioner: start the network's last layer at zero weights and the
        element-wise initialization as biases.
    :param options: as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = ConstrainedFamily


class ConditionalUnconstrainedMonotoneAutoregressive(
    _FromOptions, ConditionalMonotoneAutoregressive
):
    r"""
    The conditional version of :class:`UnconstrainedMonotoneAutoregressive`: the integrand of
    dimension d is :math:`N_d(t; x_{<d}, z) = c_m \sum_r a_{dr}\,\rho(w_{dr} t + h_{dr}(x_{<d},
    z))` for a context z. :meth:`condition` binds a context and returns the transform, which is
    the identity at initialization whatever the context.

    >>> import pyro.distributions as dist
    >>> from pyro.nn import ConditionalAutoRegressiveNN
    >>> input_dim, context_dim, width = 3, 2, 16
    >>> arn = ConditionalAutoRegressiveNN(input_dim, context_dim, [30], param_dims=[width + 2])
    >>> transform = ConditionalUnconstrainedMonotoneAutoregressive(input_dim, arn, width)
    >>> base = dist.Normal(torch.zeros(input_dim), torch.ones(input_dim)).to_event(1)
    >>> flow = dist.ConditionalTransformedDistribution(base, [transform])
    >>> z = torch.randn(4, context_dim)  # one context per row
    >>> flow.condition(z).log_prob(torch.randn(4, input_dim)).shape
    torch.Size([4])

    :param int input_dim: the dimension D of the input.
    :param torch.nn.Module autoregressive_nn: Pyro's ``ConditionalAutoRegressiveNN(D,
        context_dim, hidden_dims, param_dims=[width + 2])`` (``width + 1`` with
        ``scale=False``), or a network with the same call signature and output.
    :param int width: the hidden width m of each dimension's integrand network.
    :param bool scale: as for :class:`UnconstrainedMonotoneAutoregressive`.
    :param bool init_conditioner: start the network's last layer at zero weights and the
        element-wise initialization as biases.
    :param options: as for :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = UnconstrainedFamily


def _build(
    cls,
    input_dim: int,
    context_dim: int | None,
    width: int,
    hidden_dims: list[int] | None,
    permutation: torch.Tensor | None,
    options: dict,
):
    """A transform of class ``cls`` with a (conditional, if ``context_dim``) masked network
    sized for its family."""
    structure = {k: options.pop(k) for k in ("scale", "init_conditioner") if k in options}
    size = conditioner_size(cls.family_type(width, **options), structure.get("scale", True))
    if hidden_dims is not None and len(hidden_dims) == 0:
        if context_dim is not None:
            raise ValueError(
                "hidden_dims=() (the linear conditioner) is for the unconditional "
                "autoregressive flows; a conditional flow needs hidden layers to mix in the "
                "context, e.g. hidden_dims=[64, 64]"
            )
        arn = LinearAutoregressiveNN(input_dim, [size], permutation=permutation)
        return cls(input_dim, arn, width, **structure, **options)
    sizes = (default_hidden_dims(input_dim, hidden_dims),)
    factory = AutoRegressiveNN
    if context_dim is not None:
        factory = ConditionalAutoRegressiveNN
        sizes = (check_positive_int(context_dim, "context_dim"), *sizes)
    arn = masked_network(factory, input_dim, *sizes, param_dims=[size], permutation=permutation)
    return cls(input_dim, arn, width, **structure, **options)


def constrained_monotone_autoregressive(
    input_dim: int,
    width: int = 64,
    hidden_dims: list[int] | None = None,
    *,
    permutation: torch.Tensor | None = None,
    **kwargs: Any,
) -> ConstrainedMonotoneAutoregressive:
    """
    A helper function to create a :class:`ConstrainedMonotoneAutoregressive` object that takes
    care of constructing an autoregressive network with the correct input/output dimensions.

    >>> transform = constrained_monotone_autoregressive(3, width=16)
    >>> transform(torch.zeros(4, 3)).shape
    torch.Size([4, 3])

    :param int input_dim: the dimension of the input variable.
    :param int width: the hidden width m of each dimension's network (default 64).
    :param list[int] hidden_dims: the hidden layers of the autoregressive network (default two
        layers of ``10 * input_dim``); ``()`` for the paper's model, each dimension's numbers
        affine in the coordinates before it (:class:`LinearAutoregressiveNN`: the cheapest
        conditioner at large widths).
    :param torch.Tensor permutation: the variable order of the autoregressive network (default
        a random permutation, as Pyro's).
    :param kwargs: the keyword arguments of :class:`ConstrainedMonotoneAutoregressive`.
    """
    return _build(
        ConstrainedMonotoneAutoregressive,
        input_dim,
        None,
        width,
        hidden_dims,
        permutation,
        kwargs,
    )


def unconstrained_monotone_autoregressive(
    input_dim: int,
    width: int = 64,
    hidden_dims: list[int] | None = None,
    *,
    permutation: torch.Tensor | None = None,
    **kwargs: Any,
) -> UnconstrainedMonotoneAutoregressive:
    """
    A helper function to create an :class:`UnconstrainedMonotoneAutoregressive` object that
    takes care of constructing an autoregressive network with the correct input/output
    dimensions.

    >>> transform = unconstrained_monotone_autoregressive(3, width=16)
    >>> transform(torch.zeros(4, 3)).shape
    torch.Size([4, 3])

    :param int input_dim: the dimension of the input variable.
    :param int width: the hidden width m of each dimension's integrand network (default 64).
    :param list[int] hidden_dims: the hidden layers of the autoregressive network (default two
        layers of ``10 * input_dim``); ``()`` for the paper's model, each dimension's numbers
        affine in the coordinates before it (:class:`LinearAutoregressiveNN`: the cheapest
        conditioner at large widths).
    :param torch.Tensor permutation: the variable order of the autoregressive network (default
        a random permutation, as Pyro's).
    :param kwargs: the keyword arguments of :class:`UnconstrainedMonotoneAutoregressive`.
    """
    return _build(
        UnconstrainedMonotoneAutoregressive,
        input_dim,
        None,
        width,
        hidden_dims,
        permutation,
        kwargs,
    )


def conditional_constrained_monotone_autoregressive(
    input_dim: int,
    context_dim: int,
    width: int = 64,
    hidden_dims: list[int] | None = None,
    *,
    permutation: torch.Tensor | None = None,
    **kwargs: Any,
) -> ConditionalConstrainedMonotoneAutoregressive:
    """
    A helper function to create a :class:`ConditionalConstrainedMonotoneAutoregressive` object
    that takes care of constructing a conditional autoregressive network with the correct
    input/output dimensions.

    >>> transform = conditional_constrained_monotone_autoregressive(3, 2, width=16)
    >>> transform.condition(torch.zeros(2))(torch.zeros(4, 3)).shape
    torch.Size([4, 3])

    :param int input_dim: the dimension of the input variable.
    :param int context_dim: the dimension of the context variable.
    :param int width: the hidden width m of each dimension's network (default 64).
    :param list[int] hidden_dims: the hidden layers of the autoregressive network (default two
        layers of ``10 * input_dim``).
    :param torch.Tensor permutation: the variable order of the autoregressive network (default
        a random permutation, as Pyro's).
    :param kwargs: the keyword arguments of :class:`ConditionalConstrainedMonotoneAutoregressive`.
    """
    return _build(
        ConditionalConstrainedMonotoneAutoregressive,
        input_dim,
        context_dim,
        width,
        hidden_dims,
        permutation,
        kwargs,
    )


def conditional_unconstrained_monotone_autoregressive(
    input_dim: int,
    context_dim: int,
    width: int = 64,
    hidden_dims: list[int] | None = None,
    *,
    permutation: torch.Tensor | None = None,
    **kwargs: Any,
) -> ConditionalUnconstrainedMonotoneAutoregressive:
    """
    A helper function to create a :class:`ConditionalUnconstrainedMonotoneAutoregressive` object
    that takes care of constructing a conditional autoregressive network with the correct
    input/output dimensions.

    >>> transform = conditional_unconstrained_monotone_autoregressive(3, 2, width=16)
    >>> transform.condition(torch.zeros(2))(torch.zeros(4, 3)).shape
    torch.Size([4, 3])

    :param int input_dim: the dimension of the input variable.
    :param int context_dim: the dimension of the context variable.
    :param int width: the hidden width m of each dimension's integrand network (default 64).
    :param list[int] hidden_dims: the hidden layers of the autoregressive network (default two
        layers of ``10 * input_dim``).
    :param torch.Tensor permutation: the variable order of the autoregressive network (default
        a random permutation, as Pyro's).
    :param kwargs: the keyword arguments of
        :class:`ConditionalUnconstrainedMonotoneAutoregressive`.
    """
    return _build(
        ConditionalUnconstrainedMonotoneAutoregressive,
        input_dim,
        context_dim,
        width,
        hidden_dims,
        permutation,
        kwargs,
    )


def monotone_autoregressive(
    input_dim: int,
    family: Family,
    hidden_dims: list[int] | None = None,
    *,
    permutation: torch.Tensor | None = None,
    scale: bool = True,
    init_conditioner: bool = True,
) -> MonotoneAutoregressive:
    """
    A helper function to create a :class:`MonotoneAutoregressive` of any
    :class:`~pyro_overparam_flows.transforms.family.Family`, with a masked network sized for it.

    >>> from pyro_overparam_flows.transforms.constrained import ConstrainedFamily
    >>> transform = monotone_autoregressive(3, ConstrainedFamily(width=8))
    >>> transform(torch.zeros(4, 3)).shape, transform.conditioner_size  # 8 biases, beta, s, scale
    (torch.Size([4, 3]), 11)

    :param int input_dim: the dimension of the input variable.
    :param Family family: the maps of each dimension.
    :param list[int] hidden_dims: the hidden layers of the autoregressive network (default two
        layers of ``10 * input_dim``); ``()`` for the paper's model, each dimension's numbers
        affine in the coordinates before it (:class:`LinearAutoregressiveNN`: the cheapest
        conditioner at large widths).
    :param torch.Tensor permutation: the variable order (default a random permutation).
    :param bool scale: as for :class:`MonotoneAutoregressive`.
    :param bool init_conditioner: as for :class:`MonotoneAutoregressive`.
    """
    arn = masked_network(
        AutoRegressiveNN,
        input_dim,
        default_hidden_dims(input_dim, hidden_dims),
        param_dims=[conditioner_size(family, scale)],
        permutation=permutation,
    )
    return MonotoneAutoregressive(
        input_dim, family, arn, scale=scale, init_conditioner=init_conditioner
    )
