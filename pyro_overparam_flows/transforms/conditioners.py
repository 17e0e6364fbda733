r"""What the autoregressive and coupling flows share: their numbers per dimension come from a
conditioner network.

Each dimension d keeps the family's weights (for the two families, w and a, shape
``(input_dim, width)``); the free numbers (the hidden biases :math:`h_d \in \mathbb{R}^m`, the
offset :math:`\beta_d` and, for constrained flows, the tail :math:`s_d`) come from a conditioner:

* **autoregressive** (:mod:`~pyro_overparam_flows.transforms.autoregressive`): a masked network
  (Pyro's :class:`~pyro.nn.AutoRegressiveNN`) of :math:`x_{<d}` in the network's variable
  order, so the Jacobian is triangular in that order;
* **coupling** (:mod:`~pyro_overparam_flows.transforms.coupling`): a dense network (Pyro's
  :class:`~pyro.nn.DenseNN`) of the first ``split_dim`` coordinates gives the numbers of the
  others;
* **conditional**: the same with a context vector fed to the conditioner;
  ``.condition(context)`` returns the plain transform for that context (its conditioner a
  :class:`WithContext`), which broadcasts the context's batch shape against the input's.

The conditioner gives P = :attr:`~.family.Family.free_size` (+ 1 with a scale) numbers per
dimension: layout ``(..., P, input_dim)`` for autoregressive networks (Pyro's
``AutoRegressiveNN(input_dim, hidden_dims, param_dims=[P])``) and ``(..., P * (input_dim -
split_dim))`` for coupling networks (``DenseNN(split_dim, hidden_dims, param_dims=[P * D2])``).
By default the conditioner's last layer starts with zero weights and with biases equal to the
element-wise flow's initialization, so at initialization the flow is the element-wise flow of
the same parametrization: exactly the identity for unconstrained flows, at every width.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from ..validation import check_bool, check_dtype, check_positive_int
from .base import FamilyHost, MonotoneBase, RefuseHalfPrecision
from .errors import implicit_step, validation_enabled
from .family import Family, check_family

__all__ = [
    "MAX_LOG_SCALE",
    "ConditionalFlow",
    "ConditionedFlow",
    "Conditioning",
    "LinearAutoregressiveNN",
    "WithContext",
    "bounded_log_scale",
    "conditioner_size",
    "default_hidden_dims",
    "masked_network",
    "start_conditioner_",
    "start_family_",
]


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


class LinearAutoregressiveNN(nn.Module):
    r"""The paper's conditioner for the autoregressive flows: each number that dimension d's map
    is given (its hidden biases, offset, tail, log-scale) is affine in the coordinates before d,

        :math:`\theta_{dp}(x) = \sum_{j <_\pi d} V_{dpj} x_j + c_{dp}`,

    so the hidden pre-activations :math:`w_{dr} x_d + b_{dr}(x_{<d})` are linear in
    :math:`(x_{<d}, x_d)`, the one-hidden-layer networks of Shah et al. (2022) with no other
    layer. A masked linear map from D inputs to D * P outputs, returned as ``(..., D, P)``
    (``numbers_last``): each dimension's numbers lie together, which the flows' kernels read
    in place, without the transposes of Pyro's ``(..., P, D)`` layout. ``hidden_dims=()`` in
    the autoregressive helpers builds it.

    :param int input_dim: D.
    :param list[int] param_dims: ``[P]``, the numbers per dimension.
    :param torch.Tensor permutation: the variable order (default a random permutation, as
        Pyro's :class:`~pyro.nn.AutoRegressiveNN`).

    >>> network = LinearAutoregressiveNN(3, [5], permutation=torch.tensor([0, 1, 2]))
    >>> x = torch.randn(4, 3)
    >>> network(x).shape
    torch.Size([4, 3, 5])
    >>> bool((network(x)[:, 0] == network.bias.view(3, 5)[0]).all())  # the first depends on none
    True
    """

    #: The output's layout is ``(..., D, P)``.
    numbers_last = True

    def __init__(
        self,
        input_dim: int,
        param_dims: list[int],
        permutation: torch.Tensor | None = None,
    ):
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        if len(param_dims) != 1:
            raise ValueError(f"param_dims must be one count [P], got {param_dims!r}")
        self.count = check_positive_int(param_dims[0], "param_dims[0]")
        if permutation is None:
            permutation = torch.randperm(input_dim)
        if sorted(permutation.tolist()) != list(range(input_dim)):
            raise ValueError(f"permutation must order 0 .. {input_dim - 1}, got {permutation}")
        self.register_buffer("permutation", permutation.clone())
        rank = torch.empty_like(permutation)
        rank[permutation] = torch.arange(input_dim)
        # Output (d, p) sees input j when j comes before d in the order.
        mask = (rank.unsqueeze(1) > rank.unsqueeze(0)).repeat_interleave(self.count, 0)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        layer = nn.Linear(input_dim, input_dim * self.count)
        self.weight = nn.Parameter(layer.weight.detach() * self.mask)
        self.bias = nn.Parameter(layer.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One product of (x, 1) with the stacked weights and bias, laid out (D + 1, D * P):
        # its gradient is then (x, 1)^T @ grad, one fast product for weights and bias alike.
        # (nn.functional.linear's weight gradient is grad^T @ x, several times slower for this
        # tall, thin weight, and its bias gradient a second pass over the output's gradient.)
        stacked = torch.cat([self.weight * self.mask, self.bias.unsqueeze(-1)], -1)
        extended = torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], -1)
        out = extended @ stacked.t().contiguous()
        return out.unflatten(-1, (self.input_dim, self.count))

    @torch.no_grad()
    def start_(self, initial: torch.Tensor) -> None:
        """Output ``initial`` (shape ``(P, D)``) for every input: zero weights, ``initial``
        (transposed to the ``(D, P)`` layout) as the bias."""
        self.weight.zero_()
        self.bias.copy_(initial.transpose(0, 1).reshape(-1))


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
    if isinstance(conditioner, LinearAutoregressiveNN):
        conditioner.start_(initial)
        return
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


def start_family_(
    host: FamilyHost, dims: int, conditioner: nn.Module, init_conditioner: bool
) -> None:
    """Register ``host``'s family weights for ``dims`` transformed coordinates and, with
    ``init_conditioner``, start ``conditioner`` at the element-wise initialization (and
    log-scale 0 with a scale): output unit ``p * dims + d`` holds number p of coordinate d, the
    ``(P, dims)`` layout.

    >>> from pyro.nn import DenseNN
    >>> from pyro_overparam_flows import constrained_monotone_coupling
    >>> transform = constrained_monotone_coupling(3, width=4)
    >>> transform.conditioner_size, transform.nn.layers[-1].out_features  # P, P * (3 - 1)
    (7, 14)
    """
    free = host.adopt_family(dims)
    if check_bool(init_conditioner, "init_conditioner"):
        initial = host.family.join(free)
        if host.scale:
            initial = torch.cat([initial, initial.new_zeros(len(initial), 1)], -1)
        start_conditioner_(conditioner, initial.T)


def conditioner_size(family: Family, scale: object) -> int:
    """The numbers per dimension a conditioner of ``family`` gives: the free numbers, and a
    log-scale when ``scale`` is True.

    >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
    >>> conditioner_size(UnconstrainedFamily(16), scale=True)  # 16 biases, offset, log-scale
    18
    >>> conditioner_size(UnconstrainedFamily, scale=True)
    Traceback (most recent call last):
        ...
    ValueError: family must be a Family instance (e.g. UnconstrainedFamily(width=64)), got the class UnconstrainedFamily
    """  # noqa: E501
    check_family(family)
    return family.free_size + int(scale is True)


def default_hidden_dims(input_dim: int, hidden_dims: list[int] | None) -> list[int]:
    """``hidden_dims``, or Pyro's default for its spline flows: two layers of
    ``10 * input_dim``.

    >>> default_hidden_dims(3, None), default_hidden_dims(3, [16])
    ([30, 30], [16])
    """
    check_positive_int(input_dim, "input_dim")
    return [10 * input_dim, 10 * input_dim] if hidden_dims is None else list(hidden_dims)


def masked_network(factory: Callable[..., nn.Module], input_dim: int, *args, **kwargs):
    """``factory(input_dim, *args, **kwargs)`` (Pyro's masked networks) without Pyro's
    suggestion of an affine transform in 1-D: a monotone network is the point.

    >>> from pyro.nn import AutoRegressiveNN
    >>> masked_network(AutoRegressiveNN, 1, [4], param_dims=[3])(torch.zeros(2, 1)).shape
    torch.Size([2, 3, 1])
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input_dim = 1.*")
        return factory(input_dim, *args, **kwargs)


class WithContext(nn.Module):
    """A conditional network with its context bound, broadcasting the two batch shapes: what
    ``.condition(context)`` gives the transform it returns.

    >>> from pyro.nn import ConditionalDenseNN
    >>> network = ConditionalDenseNN(2, 3, [8], param_dims=[4])
    >>> bound = WithContext(network, torch.randn(5, 1, 3), torch.float32)
    >>> bound(torch.randn(7, 2)).shape  # batch shapes (5, 1) and (7,) broadcast
    torch.Size([5, 7, 4])
    """

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


class ConditionedFlow(MonotoneBase):
    r"""Shared by autoregressive and coupling flows: the family, the optional conditioned scale,
    and the conditioning computed by the last call (kept by the transform's cache, so a
    log-Jacobian after a forward or inverse call does not run the conditioner again).

    With a scale, dimension d maps as :math:`y_d = \beta_d + e^{\sigma_d} (f_d(x_d) - \beta_d)`,
    f_d the family's map and :math:`\beta_d` its offset (added after the scale, so that a
    location moves at the rate of the offset whatever the scale, as in an affine flow), and
    :math:`\sigma_d = 5 \tanh(v_d / 5)` of the conditioner's last number :math:`v_d` for d
    (:func:`bounded_log_scale`). A transform bound to a context by a conditional flow's
    ``.condition`` reads the family's weights from that flow, its ``parent``.

    >>> from pyro_overparam_flows import unconstrained_monotone_coupling
    >>> transform = unconstrained_monotone_coupling(4, width=8)
    >>> isinstance(transform, ConditionedFlow), transform.scale, transform.conditioner_size
    (True, True, 10)
    """

    def __init__(
        self,
        input_dim: int,
        family: Family,
        *,
        scale: bool = True,
    ):
        super().__init__(input_dim, family)
        self.scale = check_bool(scale, "scale")

    def _bind(self, name: str, conditioner: nn.Module, parent: nn.Module | None) -> None:
        """Register the conditioner as ``name`` and then the ``parent`` a bound transform reads
        its tensors from: parameter names come from the first path to each
        (``arn.network.*``, as in version 0.1)."""
        setattr(self, name, conditioner)
        if parent is not None:
            self.parent = parent

    def _tensor_owner(self) -> nn.Module:
        parent = self._modules.get("parent")
        return self if parent is None else parent

    @property
    def conditioner_size(self) -> int:
        """The numbers per dimension the conditioner gives (:func:`conditioner_size`)."""
        return conditioner_size(self.family, self.scale)

    def _needs_graph(self, y: torch.Tensor) -> bool:
        """Whether the inverse must carry gradients: to y, the parameters, or a bound context."""
        contexts = (m.context for m in self.modules() if isinstance(m, WithContext))
        return torch.is_grad_enabled() and (
            y.requires_grad
            or any(p.requires_grad for p in self.parameters())
            or any(c.requires_grad for c in contexts)
        )

    def _conditioning(self, free: torch.Tensor) -> Conditioning:
        """Split the conditioner's numbers, shape ``(..., dims, P)``, into network and scale."""
        tensors, family = self.tensors(), self.family
        if self.scale:
            fields = family.split(free, extra=("log_scale",))
            log_scale = bounded_log_scale(fields.pop("log_scale"))
            return Conditioning(family.network(tensors, fields), log_scale)
        return Conditioning(family.network(tensors, family.split(free)), None)

    def _conditioning_for(self, x: torch.Tensor) -> Conditioning:
        cached = self._cache.conditioning_for(x)
        return self._condition_on(x) if cached is None else cached

    def _condition_on(self, x: torch.Tensor) -> Conditioning:
        raise NotImplementedError

    def _apply_map(self, x: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        net, log_scale = conditioning
        if log_scale is None:
            return self.family.map(x, net)
        centred = self.family.map(x, net._replace(offset=torch.zeros_like(net.offset)))
        return torch.addcmul(net.offset, centred, torch.exp(log_scale))

    def _apply_map_keeping_log_slope(
        self, x: torch.Tensor, conditioning: Conditioning, key: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`_apply_map`, keeping the log-derivatives for the log-Jacobian of the input
        ``key`` (x, or the whole input x is part of) when the family computes them in the same
        pass."""
        net, log_scale = conditioning
        if log_scale is not None:
            net = net._replace(offset=torch.zeros_like(net.offset))
        y, log_slope = self.family.map_and_log_derivative(x, net)
        if log_slope is not None and log_scale is not None:
            log_slope = log_slope + log_scale
        self._cache.keep_log_slope(key, log_slope)
        if log_scale is None:
            return y
        return torch.addcmul(conditioning.network.offset, y, torch.exp(log_scale))

    def _log_slope(
        self, x: torch.Tensor, conditioning: Conditioning, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log f'(x) plus the conditioned log-scale; kept from the forward pass on the input
        ``key`` if given and that pass kept it."""
        kept = None if key is None else self._cache.log_slope_for(key)
        if kept is not None:
            return kept
        log_slope = self.family.log_derivative(x, conditioning.network)
        return log_slope if conditioning.log_scale is None else log_slope + conditioning.log_scale

    def _solve_given(
        self, y: torch.Tensor, conditioning: Conditioning, columns: torch.Tensor
    ) -> torch.Tensor:
        """The preimage of y (coordinates ``columns``) under the map of ``conditioning``, with
        gradient if on."""
        with torch.no_grad():
            x = self.family.solve(y, conditioning.network, conditioning.log_scale, columns=columns)
        if torch.is_grad_enabled():
            # One Newton step with the graph: its value is the root, its gradient the implicit
            # function theorem's, through the conditioning too.
            with torch.no_grad():
                log_slope = self._log_slope(x, conditioning)
            x = implicit_step(x, self._apply_map(x, conditioning) - y, log_slope)
        return x


class ConditionalFlow(FamilyHost, RefuseHalfPrecision, ConditionalTransformModule):
    """Shared by the conditional flows: the family's weights, the conditional network
    ``self.nn`` and the checks of the plain flows; ``.condition(context)`` gives the plain
    structure bound to the context.

    >>> from pyro_overparam_flows import conditional_unconstrained_monotone_autoregressive
    >>> transform = conditional_unconstrained_monotone_autoregressive(3, 2, width=8)
    >>> isinstance(transform, ConditionalFlow), transform.width
    (True, 8)
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        family: Family,
        network: nn.Module,
        dims: int,
        *,
        scale: bool = True,
        init_conditioner: bool = True,
    ):
        check_dtype(torch.get_default_dtype(), "the default dtype")
        check_family(family)
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.family = family
        self.scale = check_bool(scale, "scale")
        self.nn = network
        start_family_(self, dims, network, init_conditioner)

    @property
    def conditioner_size(self) -> int:
        """The numbers per dimension the conditioner gives (:func:`conditioner_size`)."""
        return conditioner_size(self.family, self.scale)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
