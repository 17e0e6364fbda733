"""Autoregressive monotone flows, plain and conditional, of both families."""

from __future__ import annotations

import warnings
from typing import Any

from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN

from ..activations import lookup
from ..parametrizations import CONSTRAINED_PARAMETRIZATIONS
from .base import check_input_dim, check_width, resolve_tail
from .conditioned import AutoregressiveFlow, ConditionalAutoregressiveFlow
from .constrained import ConstrainedFamily
from .unconstrained import UnconstrainedFamily

__all__ = [
    "ConditionalConstrainedMonotoneAutoregressive",
    "ConditionalUnconstrainedMonotoneAutoregressive",
    "ConstrainedMonotoneAutoregressive",
    "UnconstrainedMonotoneAutoregressive",
    "conditional_constrained_monotone_autoregressive",
    "conditional_unconstrained_monotone_autoregressive",
    "constrained_monotone_autoregressive",
    "unconstrained_monotone_autoregressive",
]

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


class ConstrainedMonotoneAutoregressive(ConstrainedFamily, AutoregressiveFlow):
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
    :param family: ``activation``, ``positivity``, ``tail``, ``parametrization`` and
        ``projection_floor``, as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES


class UnconstrainedMonotoneAutoregressive(UnconstrainedFamily, AutoregressiveFlow):
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
    :param family: ``activation``, ``phi``, ``integration``, ``quadrature_nodes``,
        ``parametrization`` and ``tail``, as for
        :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES


class ConditionalConstrainedMonotoneAutoregressive(
    ConstrainedFamily, ConditionalAutoregressiveFlow
):
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
    :param family: as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES


class ConditionalUnconstrainedMonotoneAutoregressive(
    UnconstrainedFamily, ConditionalAutoregressiveFlow
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
    :param family: as for :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES


def _free_size(constrained: bool, width: int, options: dict) -> int:
    """Numbers per dimension the conditioner of a flow built with ``options`` gives."""
    check_width(width)
    tail = False
    if constrained:
        name = options.get("parametrization", "standard")
        setting = lookup(CONSTRAINED_PARAMETRIZATIONS, name, "parametrization")
        tail = resolve_tail(options.get("tail"), setting)
    return width + 1 + int(tail) + int(options.get("scale", True) is True)


def _default_hidden_dims(input_dim: int, hidden_dims: list[int] | None) -> list[int]:
    check_input_dim(input_dim)
    # Pyro's spline_autoregressive default: two layers of 10 units per input dimension.
    return [10 * input_dim, 10 * input_dim] if hidden_dims is None else list(hidden_dims)


def _masked_network(factory, input_dim: int, *args, **kwargs):
    with warnings.catch_warnings():
        # Pyro suggests an affine transform for input_dim = 1; a monotone network is the point.
        warnings.filterwarnings("ignore", message=".*input_dim = 1.*")
        return factory(input_dim, *args, **kwargs)


def _build(cls, input_dim: int, context_dim: int | None, width: int, hidden_dims, kwargs: dict):
    """A transform of class ``cls`` with a (conditional, if ``context_dim``) masked network."""
    constrained = issubclass(cls, ConstrainedFamily)
    sizes = (_default_hidden_dims(input_dim, hidden_dims),)
    if context_dim is None:
        factory = AutoRegressiveNN
    else:
        factory, sizes = (
            ConditionalAutoRegressiveNN,
            (
                check_input_dim(context_dim, "context_dim"),
                *sizes,
            ),
        )
    param_dims = [_free_size(constrained, width, kwargs)]
    arn = _masked_network(factory, input_dim, *sizes, param_dims=param_dims)
    return cls(input_dim, arn, width, **kwargs)


def constrained_monotone_autoregressive(
    input_dim: int, width: int = 64, hidden_dims: list[int] | None = None, **kwargs: Any
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
        layers of ``10 * input_dim``).
    :param kwargs: the keyword arguments of :class:`ConstrainedMonotoneAutoregressive`.
    """
    return _build(ConstrainedMonotoneAutoregressive, input_dim, None, width, hidden_dims, kwargs)


def unconstrained_monotone_autoregressive(
    input_dim: int, width: int = 64, hidden_dims: list[int] | None = None, **kwargs: Any
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
        layers of ``10 * input_dim``).
    :param kwargs: the keyword arguments of :class:`UnconstrainedMonotoneAutoregressive`.
    """
    return _build(UnconstrainedMonotoneAutoregressive, input_dim, None, width, hidden_dims, kwargs)


def conditional_constrained_monotone_autoregressive(
    input_dim: int,
    context_dim: int,
    width: int = 64,
    hidden_dims: list[int] | None = None,
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
    :param kwargs: the keyword arguments of :class:`ConditionalConstrainedMonotoneAutoregressive`.
    """
    return _build(
        ConditionalConstrainedMonotoneAutoregressive,
        input_dim,
        context_dim,
        width,
        hidden_dims,
        kwargs,
    )


def conditional_unconstrained_monotone_autoregressive(
    input_dim: int,
    context_dim: int,
    width: int = 64,
    hidden_dims: list[int] | None = None,
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
    :param kwargs: the keyword arguments of
        :class:`ConditionalUnconstrainedMonotoneAutoregressive`.
    """
    return _build(
        ConditionalUnconstrainedMonotoneAutoregressive,
        input_dim,
        context_dim,
        width,
        hidden_dims,
        kwargs,
    )
