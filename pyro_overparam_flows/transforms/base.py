"""What every transform of the package shares: a family held by a structure (see
:mod:`~pyro_overparam_flows.transforms.family`), the family's tensors registered on the
transform, Pyro's cache made safe for training, half precision refused, and input checks."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn

from ..parametrizations import Parametrization
from ..validation import check_dtype, check_floating_tensor, check_positive_int
from .cache import PairCache
from .errors import overflow_error, validation_enabled
from .family import Family, check_family

__all__ = ["FamilyHost", "MonotoneBase", "RefuseHalfPrecision", "resolve_tail"]


class RefuseHalfPrecision:
    """A mixin for :class:`torch.nn.Module` s: ``.to()``, ``.half()`` and the like raise a
    ValueError, before converting anything, when asked for a dtype other than float32 or
    float64.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(1, width=4)
    >>> isinstance(transform, RefuseHalfPrecision)
    True
    >>> transform.half()
    Traceback (most recent call last):
    ...
    ValueError: converting UnconstrainedMonotone to torch.float16 is not supported: ...
    >>> transform.double().hidden_weight.dtype
    torch.float64
    """

    def _apply(self, fn, *args, **kwargs):
        try:
            probe = fn(torch.zeros(1))
        except Exception:  # a device that is not there, say: the conversion itself will tell
            probe = None
        if isinstance(probe, torch.Tensor) and probe.dtype != torch.float32:
            check_dtype(probe.dtype, f"converting {type(self).__name__} to")
        return super()._apply(fn, *args, **kwargs)


def resolve_tail(tail: object, parametrization: Parametrization) -> bool:
    """Whether a flow has a tail: ``tail`` itself if True or False; if None (the default), a
    tail for the width-aware parametrizations and none for the paper's presets, which
    reproduce the paper's bounded models.

    >>> from pyro_overparam_flows.parametrizations import CONSTRAINED_PARAMETRIZATIONS as P
    >>> resolve_tail(None, P["standard"]), resolve_tail(None, P["standard-normal"])
    (True, False)
    >>> resolve_tail(False, P["standard"])
    False
    """
    if tail is None:
        return parametrization.width_aware
    if not isinstance(tail, bool):
        raise ValueError(f"tail must be True, False or None (the default), got {tail!r}")
    return tail


# Attributes of version 0.1's transforms (family mixins, the cache on the transform) that the
# family and the PairCache hold now.
_VERSION_0_1 = (
    "width", "activation", "positivity", "phi", "integration", "has_tail", "parametrization",
    "projection_floor", "multiplier", "_cache_state", "_cached_direction", "_cache_token",
    "_cached_network",
)  # fmt: skip


def _from_version_0_1(state: dict, family_type: type[Family] | None) -> dict:
    """The pickled state of a version 0.1 transform (its family mixed into its class) as this
    version's: a family of the class's ``family_type`` built from the old attributes
    (``family_type.from_version_0_1``), a fresh cache, the tensors' names."""
    if family_type is None or not hasattr(family_type, "from_version_0_1"):
        raise ValueError(
            "this pickle was written by version 0.1 of pyro_overparam_flows and its class has "
            "no family to rebuild; rebuild the transform and load its state_dict instead"
        )
    family = family_type.from_version_0_1(state)
    # The transform's own tensors were the family's weights, derived buffers and (element-wise)
    # free numbers: the conditioner's are those of a submodule.
    tensors = {**state["_parameters"], **state["_buffers"]}
    own = [name for name, value in tensors.items() if value is not None]
    upgraded = {k: v for k, v in state.items() if k not in _VERSION_0_1}
    upgraded.update(family=family, _own_tensors=tuple(own))
    if "_cached_x_y" in state:
        upgraded["_cache"] = PairCache()
    return upgraded


class FamilyHost:
    """A mixin for :class:`torch.nn.Module` s that hold a :class:`~.family.Family` as
    ``self.family``: the family's weights and derived buffers are registered on the module under
    their own names, handed back to the family by name, kept in the module's dtype and device,
    and the family's configuration and views read as the module's attributes
    (``transform.width``, ``transform.hidden_weight``).

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(2, width=8)
    >>> isinstance(transform, FamilyHost), transform.width, transform.family.width
    (True, 8, 8)
    >>> sorted(transform.tensors())[:3]
    ['hidden_bias', 'offset', 'raw_hidden_weight']
    """

    family: Family

    def adopt_family(self, dim: int) -> dict[str, torch.Tensor]:
        """Register the family's weights of ``dim`` dimensions and its derived buffers; return
        the initial free numbers, by field (what a structure calls once, at construction).

        >>> from pyro_overparam_flows.transforms.unconstrained import UnconstrainedFamily
        >>> host = MonotoneBase(2, UnconstrainedFamily(4))
        >>> sorted(host.adopt_family(2)), sorted(name for name, _ in host.named_parameters())
        (['hidden_bias', 'offset'], ['hidden_weight', 'output_weight'])
        """
        weights, free = self.family.initial_weights(dim)
        for name, weight in weights.items():
            if weight.trained:
                self.register_parameter(name, nn.Parameter(weight.value))
            else:
                self.register_buffer(name, weight.value)
        derived = self.family.derived_buffers(torch.get_default_dtype())
        for name, value in derived.items():
            self.register_buffer(name, value, persistent=False)
        self._own_tensors = (*weights, *derived)
        return free

    def _tensor_owner(self) -> nn.Module:
        """The module whose tensors the family reads (a bound conditional transform reads its
        parent's)."""
        return self  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"family={self.family.name}, input_dim={self.input_dim}"

    def tensors(self) -> dict[str, torch.Tensor]:
        """The family's tensors by name (weights, derived buffers and, for an element-wise
        transform, its free numbers), as the family reads them."""
        owner = self._tensor_owner()
        return {name: getattr(owner, name) for name in owner._own_tensors}

    @torch.no_grad()
    def project_(self):
        """Restore the family's constraints after an optimizer step: for constrained flows with
        ``positivity="projected"``, clamp the raw positive weights to ``projection_floor``
        (projected SGD); a no-op for every other flow.

        >>> from pyro_overparam_flows import constrained_monotone
        >>> transform = constrained_monotone(1, 4, positivity="projected")
        >>> with torch.no_grad():
        ...     _ = transform.raw_hidden_weight.fill_(-1.0)
        >>> bool((transform.project_().raw_hidden_weight == transform.projection_floor).all())
        True
        """
        self.family.project_(self.tensors())
        return self

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules
        except AttributeError:
            family = self.__dict__.get("family")
            if family is not None and name in family.exposed:
                return getattr(family, name)
            views = {} if family is None else family.views()
            if name in views:
                return views[name](self.tensors())
            raise

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        # Derived buffers are recomputed for the new dtype and device, not cast (casting
        # rounded float32 quadrature nodes to float64 would cost the rule its accuracy).
        names = [n for n in self.__dict__.get("_own_tensors", ()) if n in self._buffers]
        derived = [n for n in names if n in self._non_persistent_buffers_set]
        if derived:
            like = self._buffers[derived[0]]
            fresh = self.family.derived_buffers(like.dtype, like.device)
            for name in derived:
                self._buffers[name] = fresh[name]
        return self

    def __setstate__(self, state: dict) -> None:
        if "family" not in state and ("positivity" in state or "phi" in state):
            state = _from_version_0_1(state, getattr(type(self), "family_type", None))
        super().__setstate__(state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Derived buffers are not saved (checkpoints of version 0.1.0 saved quadrature nodes).
        for name in self.family.derived_buffers(torch.float64):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MonotoneBase(FamilyHost, RefuseHalfPrecision, TransformModule):
    """A bijection of ``real_vector``, increasing in each coordinate, built from ``family``:
    the structures (element-wise, autoregressive, coupling) derive from it. It keeps Pyro's
    one-pair cache safe for training (:class:`~.cache.PairCache`) and checks inputs.

    >>> from pyro_overparam_flows import unconstrained_monotone_autoregressive
    >>> transform = unconstrained_monotone_autoregressive(3, width=8)
    >>> isinstance(transform, MonotoneBase), transform.bijective, transform.sign
    (True, True, 1)
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = False

    def __init__(self, input_dim: int, family: Family):
        check_positive_int(input_dim, "input_dim")
        check_dtype(torch.get_default_dtype(), "the default dtype")
        check_family(family)
        super().__init__(cache_size=1)
        self.input_dim = input_dim
        self.family = family
        self._cache = PairCache()

    @property
    def sign(self) -> int:
        return 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._cache.refresh(self)
        cached = self._cache.answer(x, "forward")
        if cached is not None:
            return cached
        y = self._call(x)
        self._cache.remember(x, y, "forward")
        return y

    def _inv_call(self, y: torch.Tensor) -> torch.Tensor:
        self._cache.refresh(self)
        cached = self._cache.answer(y, "inverse")
        if cached is not None:
            return cached
        x = self._inverse(y)
        self._cache.remember(x, y, "inverse")
        return x

    def _finite(
        self, value: torch.Tensor, what: str, named: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``value`` (computed from finite inputs), or a ValueError naming the overflow if it is
        not finite (validation on). ``named`` adds the numbers a conditioner gave."""
        if validation_enabled() and not bool(torch.isfinite(value).all()):
            raise overflow_error(
                self, what, value, {**dict(self.named_parameters()), **(named or {})}
            )
        return value

    def _check(self, value: torch.Tensor, name: str) -> None:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() == 0 or value.shape[-1] != self.input_dim:
            raise ValueError(
                f"{name} must have shape (..., {self.input_dim}) (last dimension = input_dim), "
                f"got shape {tuple(value.shape)}"
            )
        check_floating_tensor(value, name)
        dtype = next(self.parameters()).dtype
        if value.dtype != dtype:
            raise ValueError(
                f"{name} has dtype {value.dtype} but the transform's parameters are {dtype}; "
                f"convert one of them, e.g. transform.to({dtype})"
            )
        if validation_enabled() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{name} contains NaN or infinite values; only finite inputs are allowed"
            )
