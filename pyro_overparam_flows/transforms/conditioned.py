r"""Monotone flows whose per-dimension networks take part of their parameters from a conditioner
(the paper's multi-dimensional model and its coupling and conditional variants).

Each dimension d keeps its own weights (w and a, shape ``(input_dim, width)``); the hidden biases
:math:`h_d \in \mathbb{R}^m`, the offset :math:`\beta_d` and, for constrained flows, the tail
:math:`s_d` come from a conditioner network:

* **autoregressive**: a masked network (Pyro's :class:`~pyro.nn.AutoRegressiveNN`) of
  :math:`x_{<d}` in the network's variable order, so the Jacobian is triangular in that order.
  For the unconstrained family the integrand of dimension d is
  :math:`N_d(t) = c_m \sum_r a_{dr}\,\rho(w_{dr} t + h_{dr}(x_{<d}))`, the paper's
  multi-dimensional model. The forward direction is one pass; the inverse solves one dimension
  per pass (``input_dim`` passes, each batched over all elements).
* **coupling**: a dense network (Pyro's :class:`~pyro.nn.DenseNN`) of the first ``split_dim``
  coordinates gives the parameters of the others; both directions are one pass.
* **conditional**: the same with a context vector fed to the conditioner;
  ``.condition(context)`` returns the transform for that context, which broadcasts the context's
  batch shape against the input's.

The conditioner's output layout is ``(..., P, input_dim)`` for autoregressive networks (Pyro's
``AutoRegressiveNN(input_dim, hidden_dims, param_dims=[P])``) and ``(..., P * (input_dim -
split_dim))`` for coupling networks (``DenseNN(split_dim, hidden_dims, param_dims=[P * D2])``),
with P = :attr:`free_size` numbers per dimension. By default the conditioner's last layer starts
with zero weights and with biases equal to the element-wise flow's initialization, so at
initialization the flow is the element-wise flow of the same parametrization: exactly the
identity for unconstrained flows, at every width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from .base import (
    MonotoneBase,
    RefuseHalfPrecision,
    check_dtype,
    check_input_dim,
    implicit_step,
    validation_enabled,
)

__all__ = [
    "AutoregressiveFlow",
    "ConditionalAutoregressiveFlow",
    "ConditionalCouplingFlow",
    "ConditionalMonotoneAutoregressive",
    "ConditionalMonotoneCoupling",
    "MonotoneAutoregressive",
    "Conditioning",
    "CouplingFlow",
    "MAX_LOG_SCALE",
    "MonotoneCoupling",
    "bounded_log_scale",
    "select_dimensions",
    "setup_conditioned",
    "start_conditioner_",
]

# Fields of the network tuples with a trailing width dimension (the others end at the input
# dimension, or are not tensors).
_UNIT_FIELDS = frozenset(
    {"hidden_weight", "log_hidden_weight", "hidden_bias", "output_weight", "log_output_weight"}
)


def select_dimensions(net: NamedTuple, index: torch.Tensor) -> NamedTuple:
    """The network of the dimensions ``index`` (a 1-D LongTensor) only.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> net = unconstrained_monotone(3, width=4).network()
    >>> part = select_dimensions(net, torch.tensor([0, 2]))
    >>> tuple(part.hidden_weight.shape), tuple(part.offset.shape)
    ((2, 4), (2,))
    >>> torch.equal(part.hidden_bias[1], net.hidden_bias[2])
    True
    """

    def pick(name: str, value):
        if not isinstance(value, torch.Tensor):
            return value
        return value.index_select(-2 if name in _UNIT_FIELDS else -1, index)

    return type(net)(*(pick(name, value) for name, value in zip(net._fields, net, strict=True)))


@torch.no_grad()
def start_conditioner_(conditioner: nn.Module, initial: torch.Tensor) -> None:
    """Make ``conditioner`` output ``initial`` (shape ``(P, D)``, flattened row-major) for every
    input: zero weights and ``initial`` as the bias of its last layer, zero skip connections.

    :raises ValueError: if the conditioner's last layer is not a :class:`torch.nn.Linear` with
        bias and ``initial.numel()`` outputs at ``conditioner.layers[-1]`` (as in Pyro's
        :class:`~pyro.nn.AutoRegressiveNN` and :class:`~pyro.nn.DenseNN`).

    >>> from pyro.nn import DenseNN
    >>> conditioner = DenseNN(2, [8], param_dims=[3])
    >>> start_conditioner_(conditioner, torch.tensor([[1.0, 2.0, 3.0]]))
    >>> conditioner(torch.randn(5, 2)).unique(dim=0).tolist()  # the same for every input
    [[1.0, 2.0, 3.0]]
    """
    layers = getattr(conditioner, "layers", None)
    last = layers[-1] if isinstance(layers, nn.ModuleList) and len(layers) > 0 else None
    if not isinstance(last, nn.Linear) or last.bias is None or last.out_features != initial.numel():
        raise ValueError(
            f"init_conditioner=True needs a conditioner whose last layer, .layers[-1], is a "
            f"torch.nn.Linear with bias and {initial.numel()} outputs (Pyro's AutoRegressiveNN "
            "and DenseNN built with the param_dims in the transform's docstring are); pass "
            "init_conditioner=False to use the conditioner as it is"
        )
    last.weight.zero_()
    last.bias.copy_(initial.reshape(-1))
    skip = getattr(conditioner, "skip_layer", None)
    if isinstance(skip, nn.Linear):
        skip.weight.zero_()


def setup_conditioned(
    module: nn.Module,
    dim: int,
    network: nn.Module,
    width: int,
    init_conditioner: bool,
    family: dict,
) -> None:
    """Set up the family weights of ``module``'s ``dim`` transformed coordinates and, with
    ``init_conditioner``, start its conditioner at the element-wise initialization (and log-scale
    0). Output unit ``p * dim + d`` holds number p of coordinate d: the ``(P, dim)`` layout.

    A coupling flow of the unconstrained family, set up by hand (what :class:`CouplingFlow`
    does), starts as the identity:

    >>> from pyro.nn import DenseNN
    >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
    >>> class Coupling(UnconstrainedFamily, MonotoneCoupling):
    ...     def __init__(self, hypernet, width):
    ...         super().__init__(4, 2, hypernet, scale=False)
    ...         setup_conditioned(self, 2, hypernet, width, True, {})
    >>> coupling = Coupling(DenseNN(2, [8], param_dims=[(4 + 1) * 2]), width=4)
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(coupling(x), x, atol=1e-6)
    True
    """
    init = module._setup_family(dim, width, **family)
    if not isinstance(init_conditioner, bool):
        raise ValueError(f"init_conditioner must be True or False, got {init_conditioner!r}")
    if init_conditioner:
        initial = module._initial_free(init)
        if module.scale:
            initial = torch.cat([initial, initial.new_zeros(len(initial), 1)], -1)
        start_conditioner_(network, initial.T)


class _Contextual(nn.Module):
    """A conditional network with its context bound, broadcasting the two batch shapes."""

    def __init__(self, network: nn.Module, context: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        context_dim = getattr(network, "context_dim", None)
        if not isinstance(context, torch.Tensor) or not context.is_floating_point():
            raise ValueError(
                f"context must be a floating-point torch.Tensor, got {type(context).__name__}"
                + (f" of dtype {context.dtype}" if isinstance(context, torch.Tensor) else "")
            )
        if context.dim() == 0 or (context_dim is not None and context.shape[-1] != context_dim):
            raise ValueError(
                f"context must have shape (..., {context_dim}) (last dimension = context_dim), "
                f"got shape {tuple(context.shape)}"
            )
        if context.dtype != dtype:
            raise ValueError(
                f"context has dtype {context.dtype} but the transform's parameters are {dtype}; "
                f"convert one of them, e.g. context.to({dtype})"
            )
        if validation_enabled() and not bool(torch.isfinite(context).all()):
            raise ValueError(
                "context contains NaN or infinite values; only finite values are allowed"
            )
        self.network = network
        self.context = context

    @property
    def permutation(self) -> torch.Tensor:
        return self.network.permutation

    def forward(self, inputs: torch.Tensor):
        try:
            batch = torch.broadcast_shapes(inputs.shape[:-1], self.context.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"the context's batch shape {tuple(self.context.shape[:-1])} does not broadcast "
                f"against the input's batch shape {tuple(inputs.shape[:-1])}"
            ) from None
        return self.network(
            inputs.expand(batch + inputs.shape[-1:]),
            self.context.expand(batch + self.context.shape[-1:]),
        )


def _set_column(x: torch.Tensor, index: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """x with its coordinate ``index`` replaced by ``column`` (shape ``(..., 1)``), out of place,
    the batch shapes broadcast."""
    batch = torch.broadcast_shapes(x.shape[:-1], column.shape[:-1])
    return x.expand(batch + x.shape[-1:]).index_copy(-1, index, column.expand(batch + (1,)))


def _needs_graph(module: nn.Module, y: torch.Tensor) -> bool:
    """Whether the inverse must carry gradients: to y, the parameters, or a bound context."""
    contexts = (m.context for m in module.modules() if isinstance(m, _Contextual))
    return torch.is_grad_enabled() and (
        y.requires_grad
        or any(p.requires_grad for p in module.parameters())
        or any(c.requires_grad for c in contexts)
    )


class Conditioning(NamedTuple):
    r"""What a conditioner gives each dimension: the scalar network (hidden biases, offset, tail
    filled in) and, with ``scale=True``, a log-scale :math:`\sigma_d` applied after the
    monotone map, :math:`y_d = \beta_d + e^{\sigma_d} (f_d(x_d) - \beta_d)`.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> net = unconstrained_monotone(2, width=4).network()
    >>> conditioning = Conditioning(net, torch.zeros(2))
    >>> list(conditioning.named())[:3]
    ['conditioned hidden_weight', 'conditioned hidden_bias', 'conditioned output_weight']
    """

    network: NamedTuple
    log_scale: torch.Tensor | None

    def named(self) -> dict[str, torch.Tensor]:
        """Its tensors by name, for error messages."""
        fields = zip(self.network._fields, self.network, strict=True)
        named = {f"conditioned {name}": value for name, value in fields}
        return {**named, "conditioned log_scale": self.log_scale}


#: Bound of the conditioned log-scale: :math:`\sigma = B \tanh(v / B)` of the conditioner's
#: number v, so scales stay within :math:`e^{\pm 5}` (as Pyro's affine autoregressive flow clips
#: its log-scale) while :math:`\sigma \approx v` near 0 and the gradient never vanishes.
MAX_LOG_SCALE = 5.0


def bounded_log_scale(raw: torch.Tensor) -> torch.Tensor:
    r"""The log-scale of a conditioner's number v: :math:`\sigma = B \tanh(v / B)` with
    B = :data:`MAX_LOG_SCALE`, within (-B, B), 0 at 0, with slope 1 there.

    >>> bounded_log_scale(torch.tensor([0.0, 1000.0, -1000.0])).tolist()
    [0.0, 5.0, -5.0]
    """
    return MAX_LOG_SCALE * torch.tanh(raw / MAX_LOG_SCALE)


def _check_scale(scale: object) -> bool:
    if not isinstance(scale, bool):
        raise ValueError(f"scale must be True or False, got {scale!r}")
    return scale


class _Conditioned(MonotoneBase):
    r"""Shared by autoregressive and coupling flows: the family (the module holding the weights
    and the scalar mathematics), the optional conditioned scale, and the conditioning computed
    by the last call.

    With a scale, dimension d maps as :math:`y_d = \beta_d + e^{\sigma_d} (f_d(x_d) - \beta_d)`,
    f_d the family's map and :math:`\beta_d` its offset (added after the scale, so that a
    location moves at the rate of the offset whatever the scale, as in an affine flow), and
    :math:`\sigma_d = 5 \tanh(v_d / 5)` of the conditioner's last number :math:`v_d` for d
    (:func:`bounded_log_scale`).
    """

    def __init__(self, input_dim: int, scale: bool):
        super().__init__(input_dim)
        self.scale = _check_scale(scale)

    @property
    def _family(self):
        return self

    @property
    def _free_count(self) -> int:
        return self._family.free_size + int(self.scale)

    def _conditioning(self, free: torch.Tensor) -> Conditioning:
        """Split the conditioner's numbers, shape ``(..., dims, P)``, into network and scale."""
        family = self._family
        if self.scale:
            network = family._network_from_free(free[..., :-1])
            return Conditioning(network, bounded_log_scale(free[..., -1]))
        return Conditioning(family._network_from_free(free), None)

    def _conditioning_for(self, x: torch.Tensor) -> Conditioning:
        cached = self._cached_network
        if cached is not None and cached[0] is x:
            return cached[1]
        return self._condition_on(x)

    def _condition_on(self, x: torch.Tensor) -> Conditioning:
        raise NotImplementedError

    def _apply_map(self, x: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        net, log_scale = conditioning
        if log_scale is None:
            return self._family._map_with(x, net)
        centred = self._family._map_with(x, net._replace(offset=torch.zeros_like(net.offset)))
        return torch.addcmul(net.offset, centred, torch.exp(log_scale))

    def _log_slope(self, x: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        log_slope = self._family._log_derivative_with(x, conditioning.network)
        return log_slope if conditioning.log_scale is None else log_slope + conditioning.log_scale

    def _solve_given(
        self, y: torch.Tensor, conditioning: Conditioning, columns: torch.Tensor
    ) -> torch.Tensor:
        """The preimage of y (coordinates ``columns``) under the map of ``conditioning``, with
        gradient if on."""
        with torch.no_grad():
            x = self._family._solve_with(
                y, conditioning.network, conditioning.log_scale, columns=columns
            )
        if torch.is_grad_enabled():
            # One Newton step with the graph: its value is the root, its gradient the implicit
            # function theorem's, through the conditioning too.
            with torch.no_grad():
                log_slope = self._log_slope(x, conditioning)
            x = implicit_step(x, self._apply_map(x, conditioning) - y, log_slope)
        return x


class MonotoneAutoregressive(_Conditioned):
    r"""Autoregressive machinery: subclasses mix in a family (``ConstrainedFamily`` or
    ``UnconstrainedFamily``) and give the masked conditioner as ``self.arn``.

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

    def __init__(self, input_dim: int, autoregressive_nn: nn.Module, scale: bool = True):
        super().__init__(input_dim, scale)
        if not isinstance(getattr(autoregressive_nn, "permutation", None), torch.Tensor):
            raise ValueError(
                "autoregressive_nn must expose its variable order as a tensor attribute "
                "`permutation`, as Pyro's AutoRegressiveNN does; got "
                f"{type(autoregressive_nn).__name__}"
            )
        self.arn = autoregressive_nn

    def _condition_on(self, x: torch.Tensor) -> Conditioning:
        out = self.arn(x)
        expected = (self._free_count, self.input_dim)
        if not isinstance(out, torch.Tensor) or tuple(out.shape[-2:]) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the autoregressive network must return one tensor of shape (..., {expected[0]}, "
                f"{expected[1]}) (numbers per dimension, input_dim), as AutoRegressiveNN("
                f"input_dim, hidden_dims, param_dims=[{expected[0]}]) does; got {got}"
            )
        return self._conditioning(out.transpose(-1, -2))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        conditioning = self._condition_on(x)
        self._cached_network = x, conditioning
        return self._finite(self._apply_map(x, conditioning), "forward map", conditioning.named())

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
        self._refresh_cache()
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
        self._refresh_cache()
        self._check(x, "x")
        conditioning = self._conditioning_for(x)
        log_det = self._log_slope(x, conditioning).sum(-1)
        return self._finite(log_det, "log-Jacobian", conditioning.named())

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        graph = _needs_graph(self, y)
        order = self.arn.permutation
        x = torch.zeros_like(y)
        with torch.set_grad_enabled(graph):
            for position in range(self.input_dim):
                index = order[position : position + 1]
                # The conditioner sees the coordinates solved so far, with their graph, so the
                # Newton step of the solve carries the gradient through x_<d as well.
                conditioning = self._condition_on(x)
                column = Conditioning(
                    select_dimensions(conditioning.network, index),
                    None
                    if conditioning.log_scale is None
                    else conditioning.log_scale.index_select(-1, index),
                )
                solved = self._solve_given(y.index_select(-1, index), column, index)
                x = _set_column(x, index, solved)
        # The last pass saw every x_<d, so its conditioning is the one of the final x.
        self._cached_network = x, conditioning
        return x


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


class MonotoneCoupling(_Conditioned):
    r"""Coupling machinery: subclasses mix in a family and give the dense conditioner of the
    first ``split_dim`` coordinates as ``self.nn``.

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

    def __init__(self, input_dim: int, split_dim: int, hypernet: nn.Module, scale: bool = True):
        super().__init__(input_dim, scale)
        _check_split(input_dim, split_dim)
        self.split_dim = split_dim
        self.nn = hypernet

    def _condition_on(self, x: torch.Tensor) -> Conditioning:
        count = self.input_dim - self.split_dim
        out = self.nn(x[..., : self.split_dim])
        size = self._free_count * count
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[-1] != size:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the coupling network must return one tensor of shape (..., {size}) (numbers "
                f"per dimension * (input_dim - split_dim)), as DenseNN(split_dim, hidden_dims, "
                f"param_dims=[{size}]) does; got {got}"
            )
        return self._conditioning(out.unflatten(-1, (self._free_count, count)).transpose(-1, -2))

    def _join(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(first.shape[:-1], second.shape[:-1])
        return torch.cat(
            [first.expand(batch + first.shape[-1:]), second.expand(batch + second.shape[-1:])], -1
        )

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        conditioning = self._condition_on(x)
        self._cached_network = x, conditioning
        second = self._apply_map(x[..., self.split_dim :], conditioning)
        second = self._finite(second, "forward map", conditioning.named())
        return self._join(x[..., : self.split_dim], second)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""log-Jacobian of the block-triangular map: :math:`\sum_{d > k} \log f_d'(x_d;
        x_{1:k})` with k = ``split_dim``."""
        self._refresh_cache()
        self._check(x, "x")
        conditioning = self._conditioning_for(x)
        log_det = self._log_slope(x[..., self.split_dim :], conditioning).sum(-1)
        return self._finite(log_det, "log-Jacobian", conditioning.named())

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        with torch.set_grad_enabled(_needs_graph(self, y)):
            conditioning = self._condition_on(y)  # the first part passes through: x_1:k = y_1:k
            columns = torch.arange(self.split_dim, self.input_dim, device=y.device)
            second = self._solve_given(y[..., self.split_dim :], conditioning, columns)
            x = self._join(y[..., : self.split_dim], second)
        self._cached_network = x, conditioning
        return x


class _ConditionedAutoregressive(MonotoneAutoregressive):
    """A conditional autoregressive flow with its context bound (shares the parent's weights)."""

    def __init__(self, parent: ConditionalMonotoneAutoregressive, context: torch.Tensor):
        super().__init__(
            parent.input_dim, _Contextual(parent.nn, context, parent._dtype()), parent.scale
        )
        self.parent = parent

    @property
    def _family(self):
        return self.parent


class _ConditionedCoupling(MonotoneCoupling):
    """A conditional coupling flow with its context bound (shares the parent's weights)."""

    def __init__(self, parent: ConditionalMonotoneCoupling, context: torch.Tensor):
        super().__init__(
            parent.input_dim,
            parent.split_dim,
            _Contextual(parent.nn, context, parent._dtype()),
            parent.scale,
        )
        self.parent = parent

    @property
    def _family(self):
        return self.parent


class _Conditional(RefuseHalfPrecision, ConditionalTransformModule):
    """Shared by the conditional flows: the checks of the plain ones, without a transform."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, network: nn.Module, scale: bool):
        check_dtype(torch.get_default_dtype(), "the default dtype")
        super().__init__()
        self.input_dim = check_input_dim(input_dim)
        self.scale = _check_scale(scale)
        self.nn = network

    @property
    def _free_count(self) -> int:
        return self.free_size + int(self.scale)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class ConditionalMonotoneAutoregressive(_Conditional):
    """Conditional autoregressive machinery: ``self.nn`` is a conditional masked network
    (Pyro's :class:`~pyro.nn.ConditionalAutoRegressiveNN`); subclasses mix in a family.
    :meth:`condition` gives the :class:`MonotoneAutoregressive` of a context.

    >>> from pyro_overparam_flows import conditional_unconstrained_monotone_autoregressive
    >>> transform = conditional_unconstrained_monotone_autoregressive(3, 2, width=4)
    >>> isinstance(transform, ConditionalMonotoneAutoregressive)
    True
    >>> isinstance(transform.condition(torch.zeros(2)), MonotoneAutoregressive)
    True
    """

    def __init__(self, input_dim: int, autoregressive_nn: nn.Module, scale: bool = True):
        super().__init__(input_dim, autoregressive_nn, scale)
        if not isinstance(getattr(autoregressive_nn, "permutation", None), torch.Tensor):
            raise ValueError(
                "autoregressive_nn must expose its variable order as a tensor attribute "
                "`permutation`, as Pyro's ConditionalAutoRegressiveNN does; got "
                f"{type(autoregressive_nn).__name__}"
            )

    def condition(self, context: torch.Tensor) -> MonotoneAutoregressive:
        """The flow for ``context`` (shape ``(..., context_dim)``), sharing this module's
        parameters; its batch shape broadcasts against the input's."""
        return _ConditionedAutoregressive(self, context)


class ConditionalMonotoneCoupling(_Conditional):
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

    def __init__(self, input_dim: int, split_dim: int, hypernet: nn.Module, scale: bool = True):
        super().__init__(input_dim, hypernet, scale)
        _check_split(input_dim, split_dim)
        self.split_dim = split_dim

    def condition(self, context: torch.Tensor) -> MonotoneCoupling:
        """The flow for ``context`` (shape ``(..., context_dim)``), sharing this module's
        parameters; its batch shape broadcasts against the input's."""
        return _ConditionedCoupling(self, context)


# The public classes: a family mixin (ConstrainedFamily or UnconstrainedFamily) first, then one
# of the classes below, which set up the family's weights and start the conditioner.


class _AutoregressiveSetup:
    def __init__(
        self,
        input_dim: int,
        autoregressive_nn: nn.Module,
        width: int = 64,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
        **family: Any,
    ):
        super().__init__(input_dim, autoregressive_nn, scale)
        setup_conditioned(self, input_dim, autoregressive_nn, width, init_conditioner, family)


class _CouplingSetup:
    def __init__(
        self,
        input_dim: int,
        split_dim: int,
        hypernet: nn.Module,
        width: int = 64,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
        **family: Any,
    ):
        super().__init__(input_dim, split_dim, hypernet, scale)
        dim = input_dim - split_dim
        setup_conditioned(self, dim, hypernet, width, init_conditioner, family)


class AutoregressiveFlow(_AutoregressiveSetup, MonotoneAutoregressive):
    """An autoregressive flow of the family mixed in before this class.

    >>> from pyro.nn import AutoRegressiveNN
    >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
    >>> class Flow(UnconstrainedFamily, AutoregressiveFlow):
    ...     pass
    >>> flow = Flow(2, AutoRegressiveNN(2, [8], param_dims=[4 + 2]), width=4)
    >>> x = torch.randn(3, 2)
    >>> torch.allclose(flow(x), x, atol=1e-6)  # the identity at initialization
    True
    """


class CouplingFlow(_CouplingSetup, MonotoneCoupling):
    """A coupling flow of the family mixed in before this class.

    >>> from pyro.nn import DenseNN
    >>> from pyro_overparam_flows.transforms.constrained import ConstrainedFamily
    >>> class Flow(ConstrainedFamily, CouplingFlow):
    ...     pass
    >>> flow = Flow(3, 1, DenseNN(1, [8], param_dims=[(4 + 3) * 2]), width=4)
    >>> flow(torch.randn(5, 3)).shape
    torch.Size([5, 3])
    """


class ConditionalAutoregressiveFlow(_AutoregressiveSetup, ConditionalMonotoneAutoregressive):
    """A conditional autoregressive flow of the family mixed in before this class.

    >>> from pyro_overparam_flows import ConditionalUnconstrainedMonotoneAutoregressive
    >>> issubclass(ConditionalUnconstrainedMonotoneAutoregressive, ConditionalAutoregressiveFlow)
    True
    """


class ConditionalCouplingFlow(_CouplingSetup, ConditionalMonotoneCoupling):
    """A conditional coupling flow of the family mixed in before this class.

    >>> from pyro_overparam_flows import ConditionalConstrainedMonotoneCoupling
    >>> issubclass(ConditionalConstrainedMonotoneCoupling, ConditionalCouplingFlow)
    True
    """
