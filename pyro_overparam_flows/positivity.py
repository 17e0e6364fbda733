"""How the constrained family keeps its weights positive (see :mod:`~pyro_overparam_flows.maps`).

Each reparametrization maps a free ``raw`` tensor to a positive value, gives the log of that value
computed stably (the log-derivative works in log space), and maps a positive value back to a raw
tensor (used at initialization). ``"projected"`` keeps the raw values themselves positive by a
projection after each optimizer step, as projected SGD in the paper does; the map reads them
through ``clamp(min=floor)`` so a missed projection cannot turn a weight negative.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .activations import log_softplus

__all__ = ["POSITIVITY", "Positivity"]


@dataclass(frozen=True)
class Positivity:
    r"""value(raw) > 0, log_value(raw), and inverse(value) = raw, each also given the floor of
    projected SGD: :math:`\mathrm{softplus}(r) = \log(1 + e^r)`, :math:`e^r`, :math:`r^2`, or
    :math:`\max(r, \mathrm{floor})` for ``"projected"`` (whose raw values are themselves kept
    positive after each optimizer step).

    >>> softplus, weight = POSITIVITY["softplus"], torch.tensor([0.5, 2.0])
    >>> raw = softplus.inverse(weight, 1e-6)
    >>> torch.allclose(softplus.value(raw, 1e-6), weight)
    True
    >>> torch.allclose(softplus.log_value(raw, 1e-6), weight.log())
    True
    >>> POSITIVITY["projected"].value(torch.tensor([-1.0, 3.0]), 0.5).tolist()
    [0.5, 3.0]
    """

    name: str
    value: Callable[[torch.Tensor, float], torch.Tensor]
    log_value: Callable[[torch.Tensor, float], torch.Tensor]
    inverse: Callable[[torch.Tensor, float], torch.Tensor]
    projected: bool = False

    def __reduce__(self):  # pickle by name: the functions are module-level
        return _registered, (self.name,)


def _softplus_inverse(v: torch.Tensor, floor: float) -> torch.Tensor:
    # v + log(1 - e^-v), accurate for tiny and large v alike.
    return v + torch.log(-torch.expm1(-v))


#: The positivity reparametrizations by name: ``"exp"``, ``"softplus"``, ``"square"`` and
#: ``"projected"`` (the paper's projected SGD).
#:
#: :meta hide-value:
POSITIVITY: Mapping[str, Positivity] = {
    "exp": Positivity("exp", lambda r, f: torch.exp(r), lambda r, f: r, lambda v, f: torch.log(v)),
    "softplus": Positivity(
        "softplus", lambda r, f: F.softplus(r), lambda r, f: log_softplus(r), _softplus_inverse
    ),
    "square": Positivity(
        "square",
        lambda r, f: r.square(),
        lambda r, f: 2.0 * torch.log(r.abs()),
        lambda v, f: torch.sqrt(v),
    ),
    "projected": Positivity(
        "projected",
        lambda r, f: r.clamp(min=f),
        lambda r, f: torch.log(r.clamp(min=f)),
        lambda v, f: v.clamp(min=f),
        projected=True,
    ),
}


def _registered(name: str) -> Positivity:
    return POSITIVITY[name]
