r"""The contract between a *family* of scalar monotone maps and the *structures* that use it.

A family is the mathematics of one kind of monotone map :math:`f(x; \theta_d)` per dimension d
(:class:`~pyro_overparam_flows.transforms.constrained.ConstrainedFamily`,
:class:`~pyro_overparam_flows.transforms.unconstrained.UnconstrainedFamily`); a structure
(element-wise, autoregressive, coupling, and their conditional twins) decides where each
dimension's numbers come from and knows nothing of which family it holds. A transform is one
family inside one structure, and exposes it as ``transform.family``.

The numbers of dimension d are of two kinds:

* **weights**, owned by the transform: tensors of shape ``(dim, ...)`` that
  :meth:`Family.initial_weights` names and initializes. The structure registers them on the
  transform under those names (so state dicts and Pyro's param store read
  ``raw_hidden_weight``, not ``family.raw_hidden_weight``), as parameters or, when not trained,
  as buffers, and hands them back to the family by name. Tensors the family derives rather than
  learns (quadrature nodes) are :meth:`Family.derived_buffers`: recomputed for each dtype and
  device, never saved.
* **free numbers**, :attr:`Family.free_size` per dimension in the layout
  :meth:`Family.free_fields` gives: an element-wise transform holds each field as a parameter of
  its own name, a conditioner produces them from other coordinates (and a context).

From weights and free numbers :meth:`Family.network` assembles the scalar network (a
``NamedTuple`` whose tensors end in the dimension, or in the dimension and the width), and
:meth:`Family.map`, :meth:`Family.log_derivative` and :meth:`Family.solve` compute f, log f' and
the preimage under it, batched over any leading shape. Adding a family means writing one such
class; every structure, the guides and the checks then work with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import torch

__all__ = ["Family", "Weight", "check_family", "select_fields"]


class Weight(NamedTuple):
    """An initial weight: its value and whether it is trained (a parameter) or not (a buffer).

    >>> Weight(torch.zeros(3)).trained, Weight(torch.ones(3), trained=False).trained
    (True, False)
    """

    value: torch.Tensor
    trained: bool = True


class Family(ABC):
    """The contract of a family of scalar monotone maps: what a structure may ask of it.

    Subclasses set :attr:`name`, the attributes the transforms expose (:attr:`exposed`), and
    implement every abstract method. Families hold configuration only (width, activation, ...);
    tensors live on the transform.

    The two families of the package implement it; the contributing guide (``CONTRIBUTING.md``,
    also in the documentation) writes a new one, f(x) = e^s x + t, step by step:

    >>> from pyro_overparam_flows.transforms.constrained import ConstrainedFamily
    >>> family = ConstrainedFamily(width=8)
    >>> isinstance(family, Family), family.name, family.free_size  # 8 biases, offset, tail
    (True, 'constrained', 10)
    >>> weights, free = family.initial_weights(dim=3)
    >>> sorted(weights)
    ['raw_hidden_weight', 'raw_output_weight']
    >>> {name: tuple(value.shape) for name, value in free.items()}
    {'hidden_bias': (3, 8), 'offset': (3,), 'raw_tail': (3,)}
    """

    #: A short name, shown in the transforms' repr (``"constrained"``, ``"unconstrained"``).
    name: ClassVar[str] = "family"
    #: The configuration attributes a transform of this family exposes as its own
    #: (``transform.width`` is ``transform.family.width``).
    exposed: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def free_fields(self) -> tuple[tuple[str, int | None], ...]:
        """``(name, size)`` of each field of the free numbers, in their layout order: size None
        is one number per dimension (shape ``(..., dim)``), an integer a vector of that many
        (shape ``(..., dim, size)``)."""

    @property
    def free_size(self) -> int:
        """The numbers per dimension a conditioner supplies: the sum of the fields' sizes."""
        return sum(1 if size is None else size for _, size in self.free_fields())

    @abstractmethod
    def initial_weights(self, dim: int) -> tuple[dict[str, Weight], dict[str, torch.Tensor]]:
        """Draw the initial weights of ``dim`` dimensions, and the initial free numbers (one
        tensor per field, shape ``(dim,)`` or ``(dim, size)``): those an element-wise transform
        starts with, and a conditioner is started at."""

    def derived_buffers(
        self, dtype: torch.dtype, device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Tensors computed from the configuration, not learned or saved (none by default)."""
        return {}

    @abstractmethod
    def network(
        self, tensors: Mapping[str, torch.Tensor], free: Mapping[str, torch.Tensor]
    ) -> NamedTuple:
        """The scalar networks of every dimension from the transform's tensors (weights and
        derived buffers, by name) and the free numbers (by field). Its field ``offset`` is
        :math:`\beta`, around which a conditioned scale applies (so a family used with
        ``scale=True`` has one), and which :class:`~pyro_overparam_flows.guides.AutoMonotoneFlow`
        holds constant."""

    @abstractmethod
    def map(self, x: torch.Tensor, net: Any) -> torch.Tensor:
        """f(x) per coordinate, with gradients."""

    @abstractmethod
    def log_derivative(self, x: torch.Tensor, net: Any) -> torch.Tensor:
        """log f'(x) per coordinate, with gradients."""

    def map_and_log_derivative(
        self, x: torch.Tensor, net: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """f(x), and log f'(x) where the family gets it from the same pass at no extra cost
        (else None: the structure asks :meth:`log_derivative` when it needs it). A structure's
        forward call keeps the log-derivative for the log-Jacobian of the same x."""
        return self.map(x, net), None

    @abstractmethod
    def solve(
        self,
        y: torch.Tensor,
        net: Any,
        log_scale: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""x with :math:`\beta + e^{\sigma}(f(x) - \beta) = y` (:math:`\sigma` = ``log_scale``,
        0 if None; :math:`\beta` the network's offset), without gradients; values with no
        preimage raise a ValueError (validation on) naming y's coordinates ``columns``."""

    @abstractmethod
    def select(self, net: Any, index: torch.Tensor) -> NamedTuple:
        """The network of the dimensions ``index`` (a 1-D LongTensor) only."""

    def project_(self, tensors: Mapping[str, torch.Tensor]) -> None:  # noqa: B027
        """Restore constraints on the weights after an optimizer step (nothing by default)."""

    def views(self) -> dict[str, Callable[[Mapping[str, torch.Tensor]], torch.Tensor]]:
        """Read-only tensors a transform of this family exposes, computed from its tensors
        (e.g. the positive weights of a constrained flow from their raw values)."""
        return {}

    def split(self, free: torch.Tensor, extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """The fields of free numbers of shape ``(..., dim, free_size + len(extra))``: the
        family's, then one number per dimension for each name in ``extra`` (a structure's own,
        such as its log-scale), all from one split.

        >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
        >>> fields = UnconstrainedFamily(4).split(torch.zeros(7, 2, 6), extra=("log_scale",))
        >>> {name: tuple(value.shape) for name, value in fields.items()}
        {'hidden_bias': (7, 2, 4), 'offset': (7, 2), 'log_scale': (7, 2)}
        """
        layout = (*self.free_fields(), *((name, None) for name in extra))
        # One split (its gradient one concatenation, not a zero-filled copy per field).
        parts = torch.split(free, [1 if size is None else size for _, size in layout], -1)
        return {
            name: part.squeeze(-1) if size is None else part
            for (name, size), part in zip(layout, parts, strict=True)
        }

    def join(self, fields: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The free numbers of shape ``(..., dim, free_size)`` of the fields (:meth:`split`'s
        inverse)."""
        columns = [
            fields[name].unsqueeze(-1) if size is None else fields[name]
            for name, size in self.free_fields()
        ]
        return torch.cat(columns, -1)


def check_family(family: object) -> Family:
    """``family`` if it is a :class:`Family` instance, else a ValueError that says so.

    >>> check_family("constrained")
    Traceback (most recent call last):
        ...
    ValueError: family must be a Family instance (e.g. UnconstrainedFamily(width=64)), got str
    """
    if not isinstance(family, Family):
        got = f"the class {family.__name__}" if isinstance(family, type) else type(family).__name__
        raise ValueError(
            f"family must be a Family instance (e.g. UnconstrainedFamily(width=64)), got {got}"
        )
    return family


def select_fields(net: NamedTuple, index: torch.Tensor, unit_fields: tuple[str, ...]) -> NamedTuple:
    """The network ``net`` of the dimensions ``index`` only: the fields named in
    ``unit_fields`` end in ``(dim, width)``, other tensors in ``(dim,)``; non-tensors pass.

    >>> class Net(NamedTuple):
    ...     weight: torch.Tensor
    ...     offset: torch.Tensor
    >>> net = Net(torch.arange(6.0).reshape(3, 2), torch.arange(3.0))
    >>> select_fields(net, torch.tensor([2]), ("weight",))
    Net(weight=tensor([[4., 5.]]), offset=tensor([2.]))
    """

    def pick(name: str, value):
        if not isinstance(value, torch.Tensor):
            return value
        return value.index_select(-2 if name in unit_fields else -1, index)

    return type(net)(*(pick(name, value) for name, value in zip(net._fields, net, strict=True)))
