"""The coupling structure and its conditional twin, and the coupling monotone flows of both
families (Pyro-named classes and helpers)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.nn import ConditionalDenseNN, DenseNN
from torch import nn

from ..validation import check_positive_int
from .conditioners import (
    ConditionalFlow,
    ConditionedFlow,
    Conditioning,
    WithContext,
    conditioner_size,
    default_hidden_dims,
    start_family_,
)
from .constrained import ConstrainedFamily
from .family import Family
from .unconstrained import UnconstrainedFamily

__all__ = [
    "ConditionalConstrainedMonotoneCoupling",
    "ConditionalMonotoneCoupling",
    "ConditionalUnconstrainedMonotoneCoupling",
    "ConstrainedMonotoneCoupling",
    "MonotoneCoupling",
    "UnconstrainedMonotoneCoupling",
    "conditional_constrained_monotone_coupling",
    "conditional_unconstrained_monotone_coupling",
    "constrained_monotone_coupling",
    "monotone_coupling",
    "unconstrained_monotone_coupling",
]


def _check_split(input_dim: int, split_dim: int) -> None:
    if input_dim < 2:
        raise ValueError(
            f"a coupling transform needs input_dim >= 2 (one part conditions the other), got "
            f"{input_dim}; use the element-wise or autoregressive transform in 1-D"
        )
    if isinstance(split_dim, bool) or not isinstance(split_dim, int):
        raise ValueError(f"split_dim must be an integer, got {split_dim!r}")
    if not 1 <= split_dim < input_dim:
        raise ValueError(
            f"split_dim must satisfy 1 <= split_dim < input_dim = {input_dim}, got {split_dim}"
        )


class MonotoneCoupling(ConditionedFlow):
    r"""The coupling structure: ``family``'s maps for the coordinates after ``split_dim``, their
    free numbers given by the dense network ``hypernet`` (``self.nn``) of the first ``split_dim``.

    With k = ``split_dim``: :math:`y_{1:k} = x_{1:k}` and, for d > k,
    :math:`y_d = \beta_d + e^{\sigma_d} (f_d(x_d) - \beta_d)` with the network of
    :math:`f_d`, the offset :math:`\beta_d` and the log-scale :math:`\sigma_d` given by the
    conditioner from :math:`x_{1:k}`.

    >>> from pyro_overparam_flows import constrained_monotone_coupling
    >>> transform = constrained_monotone_coupling(4, width=4)
    >>> x = torch.randn(3, 4)
    >>> isinstance(transform, MonotoneCoupling), torch.equal(transform(x)[:, :2], x[:, :2])
    (True, True)
    """

    def __init__(
        self,
        input_dim: int,
        family: Family,
        split_dim: int,
        hypernet: nn.Module,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
        parent: nn.Module | None = None,
    ):
        super().__init__(input_dim, family, scale=scale)
        _check_split(input_dim, split_dim)
        self.split_dim = split_dim
        self._bind("nn", hypernet, parent)
        if parent is None:
            start_family_(self, input_dim - split_dim, hypernet, init_conditioner)

    def _condition_on(self, x: torch.Tensor) -> Conditioning:
        count = self.input_dim - self.split_dim
        out = self.nn(x[..., : self.split_dim])
        size = self.conditioner_size * count
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[-1] != size:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the coupling network must return one tensor of shape (..., {size}) (numbers "
                f"per dimension * (input_dim - split_dim)), as DenseNN(split_dim, hidden_dims, "
                f"param_dims=[{size}]) does; got {got}"
            )
        return self._conditioning(
            out.unflatten(-1, (self.conditioner_size, count)).transpose(-1, -2).contiguous()
        )

    def _join(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(first.shape[:-1], second.shape[:-1])
        return torch.cat(
            [first.expand(batch + first.shape[-1:]), second.expand(batch + second.shape[-1:])], -1
        )

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        conditioning = self._condition_on(x)
        self._cache.conditioning = x, conditioning
        second = self._apply_map_keeping_log_slope(x[..., self.split_dim :], conditioning, x)
        second = self._finite(second, "forward map", conditioning.named())
        return self._join(x[..., : self.split_dim], second)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""log-Jacobian of the block-triangular map: :math:`\sum_{d > k} \log f_d'(x_d;
        x_{1:k})` with k = ``split_dim``."""
        self._cache.refresh(self)
        self._check(x, "x")
        conditioning = self._conditioning_for(x)
        log_det = self._log_slope(x[..., self.split_dim :], conditioning, key=x).sum(-1)
        return self._finite(log_det, "log-Jacobian", conditioning.named())

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        with torch.set_grad_enabled(self._needs_graph(y)):
            conditioning = self._condition_on(y)  # the first part passes through: x_1:k = y_1:k
            columns = torch.arange(self.split_dim, self.input_dim, device=y.device)
            second = self._solve_given(y[..., self.split_dim :], conditioning, columns)
            x = self._join(y[..., : self.split_dim], second)
        self._cache.conditioning = x, conditioning
        return x


class ConditionalMonotoneCoupling(ConditionalFlow):
    """Conditional coupling machinery: ``self.nn`` is a conditional dense network (Pyro's
    :class:`~pyro.nn.ConditionalDenseNN`) of the first ``split_dim`` coordinates.
    :meth:`condition` gives the :class:`MonotoneCoupling` of a context.

    >>> from pyro_overparam_flows import conditional_constrained_monotone_coupling
    >>> transform = conditional_constrained_monotone_coupling(4, 3, width=4)
    >>> isinstance(transform, ConditionalMonotoneCoupling)
    True
    >>> isinstance(transform.condition(torch.zeros(3)), MonotoneCoupling)
    True
    """

    def __init__(
        self,
        input_dim: int,
        family: Family,
        split_dim: int,
        hypernet: nn.Module,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
    ):
        _check_split(check_positive_int(input_dim, "input_dim"), split_dim)
        super().__init__(
            input_dim,
            family,
            hypernet,
            input_dim - split_dim,
            scale=scale,
            init_conditioner=init_conditioner,
        )
        self.split_dim = split_dim

    def condition(self, context: torch.Tensor) -> MonotoneCoupling:
        """The flow for ``context`` (shape ``(..., context_dim)``), sharing this module's
        parameters; its batch shape broadcasts against the input's."""
        bound = WithContext(self.nn, context, self._dtype())
        return MonotoneCoupling(
            self.input_dim, self.family, self.split_dim, bound, scale=self.scale, parent=self
        )


class _FromOptions:
    """The Pyro-named flows' constructor: the structure with a family of type ``family_type``
    built from the width and the keyword options."""

    family_type: type[Family]

    def __init__(
        self,
        input_dim: int,
        split_dim: int,
        hypernet: nn.Module,
        width: int = 64,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
        **options: Any,
    ):
        super().__init__(  # type: ignore[call-arg]
            input_dim,
            self.family_type(width, **options),
            split_dim,
            hypernet,
            scale=scale,
            init_conditioner=init_conditioner,
        )


_REFERENCES = """
    References:

    [1] Kulin Shah, Amit Deshpande, Navin Goyal. Learning and Generalization in
    Overparameterized Normalizing Flows. AISTATS 2022. [arXiv:2106.10535]

    [2] Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio. Density Estimation using Real NVP.
    ICLR 2017. [arXiv:1605.08803]

    [3] Antoine Wehenkel, Gilles Louppe. Unconstrained Monotonic Neural Networks.
    NeurIPS 2019. [arXiv:1908.05164]
"""


class ConstrainedMonotoneCoupling(_FromOptions, MonotoneCoupling):
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
    :param options: ``activation``, ``positivity``, ``tail``, ``parametrization`` and
        ``projection_floor``, as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = ConstrainedFamily


class UnconstrainedMonotoneCoupling(_FromOptions, MonotoneCoupling):
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
    :param options: ``activation``, ``phi``, ``integration``, ``quadrature_nodes``,
        ``parametrization`` and ``tail``, as for
        :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = UnconstrainedFamily


class ConditionalConstrainedMonotoneCoupling(_FromOptions, ConditionalMonotoneCoupling):
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
    :param options: as for :class:`~pyro_overparam_flows.ConstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = ConstrainedFamily


class ConditionalUnconstrainedMonotoneCoupling(_FromOptions, ConditionalMonotoneCoupling):
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
    :param options: as for :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    """

    __doc__ += _REFERENCES

    family_type = UnconstrainedFamily


def _split(input_dim: int, split_dim: int | None) -> int:
    check_positive_int(input_dim, "input_dim")
    split_dim = input_dim // 2 if split_dim is None else split_dim
    _check_split(input_dim, split_dim)
    return split_dim


def _build(
    cls,
    input_dim: int,
    context_dim: int | None,
    width: int,
    split_dim: int | None,
    hidden_dims: list[int] | None,
    options: dict,
):
    """A transform of class ``cls`` with a (conditional, if ``context_dim``) dense network sized
    for its family."""
    split_dim = _split(input_dim, split_dim)
    structure = {k: options.pop(k) for k in ("scale", "init_conditioner") if k in options}
    size = conditioner_size(cls.family_type(width, **options), structure.get("scale", True))
    param_dims = [size * (input_dim - split_dim)]
    hidden = default_hidden_dims(input_dim, hidden_dims)
    if context_dim is None:
        hypernet = DenseNN(split_dim, hidden, param_dims=param_dims)
    else:
        context_dim = check_positive_int(context_dim, "context_dim")
        hypernet = ConditionalDenseNN(split_dim, context_dim, hidden, param_dims=param_dims)
    return cls(input_dim, split_dim, hypernet, width, **structure, **options)


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
        ConstrainedMonotoneCoupling,
        input_dim,
        None,
        width,
        split_dim,
        hidden_dims,
        kwargs,
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
        UnconstrainedMonotoneCoupling,
        input_dim,
        None,
        width,
        split_dim,
        hidden_dims,
        kwargs,
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


def monotone_coupling(
    input_dim: int,
    family: Family,
    split_dim: int | None = None,
    hidden_dims: list[int] | None = None,
    *,
    scale: bool = True,
    init_conditioner: bool = True,
) -> MonotoneCoupling:
    """
    A helper function to create a :class:`MonotoneCoupling` of any
    :class:`~pyro_overparam_flows.transforms.family.Family`, with a dense network sized for it.

    >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
    >>> transform = monotone_coupling(4, UnconstrainedFamily(width=8))
    >>> x = torch.randn(5, 4)
    >>> torch.allclose(transform(x), x)  # the identity at initialization
    True

    :param int input_dim: the dimension of the input variable.
    :param Family family: the maps of the transformed dimensions.
    :param int split_dim: the number of conditioning coordinates (default ``input_dim // 2``).
    :param list[int] hidden_dims: the hidden layers of the dense network (default two layers
        of ``10 * input_dim``).
    :param bool scale: as for :class:`MonotoneCoupling`.
    :param bool init_conditioner: as for :class:`MonotoneCoupling`.
    """
    split_dim = _split(input_dim, split_dim)
    size = conditioner_size(family, scale) * (input_dim - split_dim)
    hypernet = DenseNN(split_dim, default_hidden_dims(input_dim, hidden_dims), param_dims=[size])
    return MonotoneCoupling(
        input_dim, family, split_dim, hypernet, scale=scale, init_conditioner=init_conditioner
    )
