"""Coupling monotone flows, plain and conditional, of both families."""

from __future__ import annotations

from typing import Any

from pyro.nn import ConditionalDenseNN, DenseNN

from .autoregressive import _free_size
from .base import check_input_dim
from .conditioned import ConditionalCouplingFlow, CouplingFlow, _check_split
from .constrained import ConstrainedFamily
from .unconstrained import UnconstrainedFamily

__all__ = [
    "ConditionalConstrainedMonotoneCoupling",
    "ConditionalUnconstrainedMonotoneCoupling",
    "ConstrainedMonotoneCoupling",
    "UnconstrainedMonotoneCoupling",
    "conditional_constrained_monotone_coupling",
    "conditional_unconstrained_monotone_coupling",
    "constrained_monotone_coupling",
    "unconstrained_monotone_coupling",
]

_REFERENCES = """
    References:

    [1] Kulin Shah, Amit Deshpande, Navin Goyal. Learning and Generalization in
    Overparameterized Normalizing Flows. AISTATS 2022. [arXiv:2106.10535]

    [2] Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio. Density Estimation using Real NVP.
    ICLR 2017. [arXiv:1605.08803]

    [3] Antoine Wehenkel, Gilles Louppe. Unconstrained Monotonic Neural Networks.
    NeurIPS 2019. [arXiv:1908.05164]
"""


class ConstrainedMonotoneCoupling(ConstrainedFamily, CouplingFlow):
    r"""
    A coupling flow (as in RealNVP) whose map of each of the last ``input_dim - split_dim``
    coordinates is a constrained one-hidden-layer network (positive weights) with hidden
    biases, offset and tail given by a dense network of the first ``split_dim`` coordinates,

        :math:`y_{1:k} = x_{1:k}, \qquad y_d = c_m \sum_{r=1}^m a_{dr}\,\sigma\big(w_{dr} x_d
        + h_{dr}(x_{1:k})\big) + s_d(x_{1:k})\,x_d + \beta_d(x_{1:k}) \quad (d > k),`

    with k = ``split_dim``, the tail :math:`s_d \ge 10^{-3}` (none with ``tail=False``), and
    the terms other than :math:`\beta_d` multiplied by :math:`e^{\sigma_d(x_{1:k})}` with
    ``scale=True`` (default). The Jacobian is block triangular, :math:`\log|\det J| = \sum_{d>k}
    \log \partial y_d / \partial x_d`; both directions take one pass of the network (the
    inverse one batched Newton solve).

    >>> import pyro.distributions as dist
    >>> from pyro.nn import DenseNN
    >>> input_dim, split_dim, width = 4, 2, 16
    >>> hypernet = DenseNN(split_dim, [20], param_dims=[(width + 3) * (input_dim - split_dim)])
    >>> transform = ConstrainedMonotoneCoupling(input_dim, split_dim, hypernet, width)
    >>> base = dist.Normal(torch.zeros(input_dim), torch.ones(input_dim)).to_event(1)
    >>> flow = dist.TransformedDistribution(base, [transform])
    >>> flow.log_prob(flow.sample((5,))).shape
    torch.Size([5])

    :param int input_dim: the dimension D of the input (at least 2).
    :param int split_dim: k, the number of leading coordinates that condition the others,
        ``1 <= k < D``.
    :param torch.nn.Module hypernet: a network of x_{1:k} returning a tensor of shape
        ``(..., P * (D - k))`` with P = ``width + 3`` (one less without tail, one less without
        scale): Pyro's ``DenseNN(k, hidden_dims, param_dims=[P * (D - k)])``.
    :param int width: the hidden width m of each coordinate's network.
    :param bool scale: multiply each coordinate's map, less its offset, by
        :math:`e^{\sigma_d(x_{1:k})}` from a last conditioner output.
    :param bool init_conditioner: start the network's last layer at zero weights and the
        element-wise initialization as biases (the flow starts element-wise).
    :param family: ``activation``, ``positivity``, ``tail``, ``parametrization`` and
        ``projection_floor``, as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES


class UnconstrainedMonotoneCoupling(UnconstrainedFamily, CouplingFlow):
    r"""
    A coupling flow (as in RealNVP) whose map of each of the last ``input_dim - split_dim``
    coordinates integrates a positive function of a free one-hidden-layer network whose hidden
    biases and offset are a dense network of the first ``split_dim`` coordinates,

        :math:`y_{1:k} = x_{1:k}, \qquad y_d = \beta_d(x_{1:k}) + \int_0^{x_d}
        \phi\Big(c_m \sum_{r=1}^m a_{dr}\,\rho\big(w_{dr} t + h_{dr}(x_{1:k})\big)\Big)\,dt
        \quad (d > k),`

    the integrand :math:`s + (1 - s)\phi` with the tail :math:`s = 10^{-3}` by default (onto the
    real line; ``tail=False`` for :math:`\phi` alone), the integral multiplied by
    :math:`e^{\sigma_d(x_{1:k})}` with ``scale=True`` (default). The log-Jacobian is exact;
    with ReLU (the default) so is the integral. Both directions take one pass of the network.
    The flow starts as the identity.

    >>> import pyro.distributions as dist
    >>> from pyro.nn import DenseNN
    >>> input_dim, split_dim, width = 4, 2, 16
    >>> hypernet = DenseNN(split_dim, [20], param_dims=[(width + 2) * (input_dim - split_dim)])
    >>> transform = UnconstrainedMonotoneCoupling(input_dim, split_dim, hypernet, width)
    >>> x = torch.randn(5, input_dim)
    >>> torch.allclose(transform(x), x)  # the identity at initialization
    True

    :param int input_dim: the dimension D of the input (at least 2).
    :param int split_dim: k, the number of leading coordinates that condition the others,
        ``1 <= k < D``.
    :param torch.nn.Module hypernet: Pyro's ``DenseNN(k, hidden_dims, param_dims=[(width + 2) *
        (D - k)])`` (``width + 1`` with ``scale=False``), or a network with the same output.
    :param int width: the hidden width m of each coordinate's integrand network.
    :param bool scale: multiply each coordinate's map, less its offset, by
        :math:`e^{\sigma_d(x_{1:k})}` from a last conditioner output.
    :param bool init_conditioner: start the network's last layer at zero weights and the
        element-wise initialization as biases.
    :param family: ``activation``, ``phi``, ``integration``, ``quadrature_nodes``,
        ``parametrization`` and ``tail``, as for
        :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES


class ConditionalConstrainedMonotoneCoupling(ConstrainedFamily, ConditionalCouplingFlow):
    r"""
    The conditional version of :class:`ConstrainedMonotoneCoupling`: the hidden biases, offset
    and tail are a dense network of :math:`(x_{1:k}, z)` for a context z. :meth:`condition`
    binds a context and returns the transform.

    >>> from pyro.nn import ConditionalDenseNN
    >>> input_dim, split_dim, context_dim, width = 4, 2, 3, 16
    >>> hypernet = ConditionalDenseNN(
    ...     split_dim, context_dim, [20], param_dims=[(width + 3) * (input_dim - split_dim)]
    ... )
    >>> transform = ConditionalConstrainedMonotoneCoupling(input_dim, split_dim, hypernet, width)
    >>> transform.condition(torch.randn(context_dim))(torch.randn(5, input_dim)).shape
    torch.Size([5, 4])

    :param int input_dim: the dimension D of the input (at least 2).
    :param int split_dim: k, ``1 <= k < D``.
    :param torch.nn.Module hypernet: Pyro's ``ConditionalDenseNN(k, context_dim, hidden_dims,
        param_dims=[P * (D - k)])`` with P = ``width + 3`` (one less without tail, one less
        without scale).
    :param int width: the hidden width m of each coordinate's network.
    :param bool scale: as for :class:`ConstrainedMonotoneCoupling`.
    :param bool init_conditioner: start the network's last layer at zero weights and the
        element-wise initialization as biases.
    :param family: as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES


class ConditionalUnconstrainedMonotoneCoupling(UnconstrainedFamily, ConditionalCouplingFlow):
    r"""
    The conditional version of :class:`UnconstrainedMonotoneCoupling`: the hidden biases and
    offset are a dense network of :math:`(x_{1:k}, z)` for a context z. :meth:`condition` binds
    a context and returns the transform (the identity at initialization).

    >>> from pyro.nn import ConditionalDenseNN
    >>> input_dim, split_dim, context_dim, width = 4, 2, 3, 16
    >>> hypernet = ConditionalDenseNN(
    ...     split_dim, context_dim, [20], param_dims=[(width + 2) * (input_dim - split_dim)]
    ... )
    >>> transform = ConditionalUnconstrainedMonotoneCoupling(input_dim, split_dim, hypernet, width)
    >>> transform.condition(torch.randn(context_dim))(torch.randn(5, input_dim)).shape
    torch.Size([5, 4])

    :param int input_dim: the dimension D of the input (at least 2).
    :param int split_dim: k, ``1 <= k < D``.
    :param torch.nn.Module hypernet: Pyro's ``ConditionalDenseNN(k, context_dim, hidden_dims,
        param_dims=[(width + 2) * (D - k)])`` (``width + 1`` with ``scale=False``).
    :param int width: the hidden width m of each coordinate's integrand network.
    :param bool scale: as for :class:`UnconstrainedMonotoneCoupling`.
    :param bool init_conditioner: start the network's last layer at zero weights and the
        element-wise initialization as biases.
    :param family: as for :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES


def _split(input_dim: int, split_dim: int | None) -> int:
    check_input_dim(input_dim)
    split_dim = input_dim // 2 if split_dim is None else split_dim
    _check_split(input_dim, split_dim)
    return split_dim


def _hidden(input_dim: int, hidden_dims: list[int] | None) -> list[int]:
    # Pyro's spline_coupling default: two layers of 10 units per input dimension.
    return [10 * input_dim, 10 * input_dim] if hidden_dims is None else list(hidden_dims)


def _build(
    cls,
    input_dim: int,
    context_dim: int | None,
    width: int,
    split_dim: int | None,
    hidden_dims,
    kwargs: dict,
):
    """A transform of class ``cls`` with a (conditional, if ``context_dim``) dense network."""
    split_dim = _split(input_dim, split_dim)
    constrained = issubclass(cls, ConstrainedFamily)
    param_dims = [_free_size(constrained, width, kwargs) * (input_dim - split_dim)]
    hidden = _hidden(input_dim, hidden_dims)
    if context_dim is None:
        hypernet = DenseNN(split_dim, hidden, param_dims=param_dims)
    else:
        context_dim = check_input_dim(context_dim, "context_dim")
        hypernet = ConditionalDenseNN(split_dim, context_dim, hidden, param_dims=param_dims)
    return cls(input_dim, split_dim, hypernet, width, **kwargs)


def constrained_monotone_coupling(
    input_dim: int,
    width: int = 64,
    split_dim: int | None = None,
    hidden_dims: list[int] | None = None,
    **kwargs: Any,
) -> ConstrainedMonotoneCoupling:
    """
    A helper function to create a :class:`ConstrainedMonotoneCoupling` object that takes care
    of constructing a dense network with the correct input/output dimensions.

    >>> transform = constrained_monotone_coupling(4, width=16)
    >>> transform(torch.zeros(5, 4)).shape
    torch.Size([5, 4])

    :param int input_dim: the dimension of the input variable (at least 2).
    :param int width: the hidden width m of each coordinate's network (default 64).
    :param int split_dim: the number of conditioning coordinates (default ``input_dim // 2``).
    :param list[int] hidden_dims: the hidden layers of the dense network (default two layers
        of ``10 * input_dim``).
    :param kwargs: the keyword arguments of :class:`ConstrainedMonotoneCoupling`.
    """
    return _build(
        ConstrainedMonotoneCoupling, input_dim, None, width, split_dim, hidden_dims, kwargs
    )


def unconstrained_monotone_coupling(
    input_dim: int,
    width: int = 64,
    split_dim: int | None = None,
    hidden_dims: list[int] | None = None,
    **kwargs: Any,
) -> UnconstrainedMonotoneCoupling:
    """
    A helper function to create an :class:`UnconstrainedMonotoneCoupling` object that takes
    care of constructing a dense network with the correct input/output dimensions.

    >>> transform = unconstrained_monotone_coupling(4, width=16)
    >>> transform(torch.zeros(5, 4)).shape
    torch.Size([5, 4])

    :param int input_dim: the dimension of the input variable (at least 2).
    :param int width: the hidden width m of each coordinate's network (default 64).
    :param int split_dim: the number of conditioning coordinates (default ``input_dim // 2``).
    :param list[int] hidden_dims: the hidden layers of the dense network (default two layers
        of ``10 * input_dim``).
    :param kwargs: the keyword arguments of :class:`UnconstrainedMonotoneCoupling`.
    """
    return _build(
        UnconstrainedMonotoneCoupling, input_dim, None, width, split_dim, hidden_dims, kwargs
    )


def conditional_constrained_monotone_coupling(
    input_dim: int,
    context_dim: int,
    width: int = 64,
    split_dim: int | None = None,
    hidden_dims: list[int] | None = None,
    **kwargs: Any,
) -> ConditionalConstrainedMonotoneCoupling:
    """
    A helper function to create a :class:`ConditionalConstrainedMonotoneCoupling` object that
    takes care of constructing a conditional dense network with the correct input/output
    dimensions.

    >>> transform = conditional_constrained_monotone_coupling(4, 3, width=16)
    >>> transform.condition(torch.zeros(3))(torch.zeros(5, 4)).shape
    torch.Size([5, 4])

    :param int input_dim: the dimension of the input variable (at least 2).
    :param int context_dim: the dimension of the context variable.
    :param int width: the hidden width m of each coordinate's network (default 64).
    :param int split_dim: the number of conditioning coordinates (default ``input_dim // 2``).
    :param list[int] hidden_dims: the hidden layers of the dense network (default two layers
        of ``10 * input_dim``).
    :param kwargs: the keyword arguments of :class:`ConditionalConstrainedMonotoneCoupling`.
    """
    return _build(
        ConditionalConstrainedMonotoneCoupling,
        input_dim,
        context_dim,
        width,
        split_dim,
        hidden_dims,
        kwargs,
    )


def conditional_unconstrained_monotone_coupling(
    input_dim: int,
    context_dim: int,
    width: int = 64,
    split_dim: int | None = None,
    hidden_dims: list[int] | None = None,
    **kwargs: Any,
) -> ConditionalUnconstrainedMonotoneCoupling:
    """
    A helper function to create a :class:`ConditionalUnconstrainedMonotoneCoupling` object that
    takes care of constructing a conditional dense network with the correct input/output
    dimensions.

    >>> transform = conditional_unconstrained_monotone_coupling(4, 3, width=16)
    >>> transform.condition(torch.zeros(3))(torch.zeros(5, 4)).shape
    torch.Size([5, 4])

    :param int input_dim: the dimension of the input variable (at least 2).
    :param int context_dim: the dimension of the context variable.
    :param int width: the hidden width m of each coordinate's network (default 64).
    :param int split_dim: the number of conditioning coordinates (default ``input_dim // 2``).
    :param list[int] hidden_dims: the hidden layers of the dense network (default two layers
        of ``10 * input_dim``).
    :param kwargs: the keyword arguments of :class:`ConditionalUnconstrainedMonotoneCoupling`.
    """
    return _build(
        ConditionalUnconstrainedMonotoneCoupling,
        input_dim,
        context_dim,
        width,
        split_dim,
        hidden_dims,
        kwargs,
    )
