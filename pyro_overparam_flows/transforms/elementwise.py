"""The element-wise structure: each coordinate mapped by its own scalar monotone map."""

from __future__ import annotations

import torch
from torch import nn

from .base import MonotoneBase
from .errors import implicit_step
from .family import Family

__all__ = ["MonotoneTransformModule"]


class MonotoneTransformModule(MonotoneBase):
    r"""A strictly increasing map applied to each coordinate of the last dimension:
    :math:`y_d = f(x_d; \theta_d)` for the maps of ``family``, every number of dimension d a
    tensor of the transform: the family's weights (parameters, or buffers where the family does
    not train them) and each field of its free numbers, a parameter under the field's name.
    The log-Jacobian is :math:`\sum_d \log f'(x_d; \theta_d)`; the inverse is the family's
    batched solve, with gradients by the implicit function theorem.

    :class:`~pyro_overparam_flows.ConstrainedMonotone` and
    :class:`~pyro_overparam_flows.UnconstrainedMonotone` are this structure with their family.

    >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
    >>> transform = MonotoneTransformModule(2, UnconstrainedFamily(width=8))
    >>> x = torch.randn(5, 2)
    >>> torch.allclose(transform(x), x)  # the unconstrained family starts as the identity
    True
    >>> sorted(name for name, _ in transform.named_parameters())
    ['hidden_bias', 'hidden_weight', 'offset', 'output_weight']
    """

    def __init__(self, input_dim: int, family: Family):
        super().__init__(input_dim, family)
        free = self.adopt_family(input_dim)
        for name, value in free.items():
            self.register_parameter(name, nn.Parameter(value))
        self._own_tensors = (*self._own_tensors, *free)

    def network(self):
        """The current parameters as the family's network (a ``NamedTuple``)."""
        tensors = self.tensors()
        free = {name: tensors[name] for name, _ in self.family.free_fields()}
        return self.family.network(tensors, free)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        y, log_slope = self.family.map_and_log_derivative(x, self.network())
        self._cache.keep_log_slope(x, log_slope)
        return self._finite(y, "forward map")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""log-Jacobian: :math:`\log|\det J| = \sum_d \log f'(x_d)` over the last dimension."""
        self._cache.refresh(self)
        self._check(x, "x")
        log_slope = self._cache.log_slope_for(x)
        if log_slope is None:
            log_slope = self.family.log_derivative(x, self.network())
        return self._finite(log_slope.sum(-1), "log-Jacobian")

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        net = self.network()
        with torch.no_grad():
            x = self.family.solve(y, net)
        if torch.is_grad_enabled() and (
            y.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            # One Newton step taken with the graph: its value is the root, its gradient is the
            # implicit function theorem's, dx = (dy - df) / f'(x).
            with torch.no_grad():
                log_slope = self.family.log_derivative(x, net)
            x = implicit_step(x, self.family.map(x, net) - y, log_slope)
        return x
