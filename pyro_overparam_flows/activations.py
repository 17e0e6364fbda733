"""Scalar activations of the one-hidden-layer networks, with the derivatives the maps need.

Three roles in the maps of :mod:`~pyro_overparam_flows.maps`:

* :data:`SATURATING` -- sigma of the constrained map, bounded and increasing, with ``sigma'``
  and a stable ``log sigma'``;
* :data:`HIDDEN` -- rho of the unconstrained integrand network, with ``rho'`` for the custom
  backward pass;
* :data:`POSITIVE` -- phi > 0 applied to the network output, with ``phi'`` and a stable
  ``log phi``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .validation import check_choice

__all__ = [
    "HIDDEN",
    "POSITIVE",
    "SATURATING",
    "HiddenActivation",
    "PositiveFunction",
    "SaturatingActivation",
    "log_softplus",
    "lookup",
]

Fn = Callable[[torch.Tensor], torch.Tensor]

_LOG2 = math.log(2.0)
# softplus(u + _SOFTPLUS_SHIFT) equals 1 at u = 0, so a zero network output means unit slope.
_SOFTPLUS_SHIFT = math.log(math.e - 1.0)


@dataclass(frozen=True)
class SaturatingActivation:
    r"""A bounded increasing sigma with range (lower, upper), its derivative (computed from
    :math:`e^{-|u|}`, to full relative accuracy until it underflows) and a stable
    log-derivative, e.g. for tanh
    :math:`\log \sigma'(u) = \log \operatorname{sech}^2 u
    = 2 \log 2 - 2|u| - 2 \log(1 + e^{-2|u|})`.

    >>> tanh = SATURATING["tanh"]
    >>> tanh.lower, tanh.upper
    (-1.0, 1.0)
    >>> [round(v, 4) for v in tanh.log_derivative(torch.tensor([0.0, 100.0])).tolist()]
    [0.0, -198.6137]
    """

    name: str
    fn: Fn
    log_derivative: Fn
    lower: float
    upper: float
    derivative: Fn

    def __reduce__(self):  # pickle by name: the functions are module-level
        return _registered, ("SATURATING", self.name)


@dataclass(frozen=True)
class HiddenActivation:
    r""":math:`\rho` and its derivative :math:`\rho'`, and :math:`\rho'` written through the
    value :math:`\rho(u)` where it can be (``derivative_of_value``, None otherwise; e.g.
    :math:`\tanh' = 1 - \tanh^2`): the quadrature then needs no second pass of u.

    >>> relu, u = HIDDEN["relu"], torch.tensor([-1.0, 2.0])
    >>> relu.fn(u).tolist(), relu.derivative(u).tolist()
    ([0.0, 2.0], [0.0, 1.0])
    >>> tanh, u = HIDDEN["tanh"], torch.linspace(-2, 2, 5)
    >>> torch.allclose(tanh.derivative_of_value(tanh.fn(u)), tanh.derivative(u))
    True
    """

    name: str
    fn: Fn
    derivative: Fn
    derivative_of_value: Fn | None = None

    def __reduce__(self):  # pickle by name: the functions are module-level
        return _registered, ("HIDDEN", self.name)


@dataclass(frozen=True)
class PositiveFunction:
    r""":math:`\phi > 0` with :math:`\phi(0) = 1`, its derivative, and :math:`\log \phi`
    computed without underflow: ``"elu_plus_one"``, :math:`\phi(u) = \mathrm{ELU}(u) + 1`
    (:math:`e^u` for u <= 0, u + 1 above), and ``"softplus"``,
    :math:`\phi(u) = \log(1 + (e - 1) e^u)`.

    >>> phi = POSITIVE["elu_plus_one"]
    >>> phi.fn(torch.tensor([0.0, 1.0])).tolist()
    [1.0, 2.0]
    >>> phi.log(torch.tensor([-200.0])).item()  # phi(-200) = e^-200 underflows; its log does not
    -200.0
    >>> round(POSITIVE["softplus"].fn(torch.zeros(1)).item(), 6)
    1.0
    """

    name: str
    fn: Fn
    derivative: Fn
    log: Fn

    def __reduce__(self):  # pickle by name: the functions are module-level
        return _registered, ("POSITIVE", self.name)


def _log_sech2(u: torch.Tensor) -> torch.Tensor:
    # log sech^2(u) = 2 log 2 - 2|u| - 2 softplus(-2|u|): finite where sech^2 underflows.
    a = u.abs()
    return 2.0 * _LOG2 - 2.0 * a - 2.0 * F.softplus(-2.0 * a)


def _log_sigmoid_derivative(u: torch.Tensor) -> torch.Tensor:
    # log(sigmoid(u) sigmoid(-u)) = -|u| - 2 softplus(-|u|).
    a = u.abs()
    return -a - 2.0 * F.softplus(-a)


def _sech2(u: torch.Tensor) -> torch.Tensor:
    # sech^2(u) = 4 e / (1 + e)^2 with e = exp(-2|u|): no 1 - tanh^2 cancellation.
    e = torch.exp(-2.0 * u.abs())
    return 4.0 * e / (1.0 + e).square()


def _stable_sigmoid_derivative(u: torch.Tensor) -> torch.Tensor:
    # sigmoid(u) sigmoid(-u) = e / (1 + e)^2 with e = exp(-|u|).
    e = torch.exp(-u.abs())
    return e / (1.0 + e).square()


def _relu_derivative(u: torch.Tensor) -> torch.Tensor:
    return (u > 0).to(u.dtype)


def _tanh_derivative(u: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.tanh(u).square()


def _sigmoid_derivative(u: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(u)
    return s * (1.0 - s)


def _erf_derivative(u: torch.Tensor) -> torch.Tensor:
    return (2.0 / math.sqrt(math.pi)) * torch.exp(-u.square())


def _elu_plus_one(u: torch.Tensor) -> torch.Tensor:
    return F.elu(u) + 1.0


def _elu_plus_one_derivative(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u > 0, torch.ones_like(u), torch.exp(torch.clamp(u, max=0.0)))


def _log_elu_plus_one(u: torch.Tensor) -> torch.Tensor:
    # log(u + 1) for u > 0 and exactly u below: no underflow for very negative u.
    return torch.where(u > 0, torch.log1p(torch.clamp(u, min=0.0)), u)


def _shifted_softplus(u: torch.Tensor) -> torch.Tensor:
    return F.softplus(u + _SOFTPLUS_SHIFT)


def _shifted_softplus_derivative(u: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(u + _SOFTPLUS_SHIFT)


def log_softplus(v: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(\mathrm{softplus}(v)) = \log\log(1 + e^v)`, equal to v (to machine
    precision) where softplus(v) would underflow.

    >>> [round(v, 4) for v in log_softplus(torch.tensor([-1000.0, 0.0])).tolist()]
    [-1000.0, -0.3665]
    """
    # Below -40, log softplus(v) = v + log1p(-e^v / 2 + ...) equals v to machine precision.
    safe = torch.clamp(v, min=-40.0)
    return torch.where(v > -40.0, torch.log(F.softplus(safe)), v)


def _log_shifted_softplus(u: torch.Tensor) -> torch.Tensor:
    return log_softplus(u + _SOFTPLUS_SHIFT)


#: The saturating activations :math:`\sigma` of constrained maps by name: ``"tanh"`` (range
#: (-1, 1)) and ``"sigmoid"`` (range (0, 1)).
#:
#: :meta hide-value:
SATURATING: Mapping[str, SaturatingActivation] = {
    "tanh": SaturatingActivation("tanh", torch.tanh, _log_sech2, -1.0, 1.0, _sech2),
    "sigmoid": SaturatingActivation(
        "sigmoid", torch.sigmoid, _log_sigmoid_derivative, 0.0, 1.0, _stable_sigmoid_derivative
    ),
}

#: The hidden activations :math:`\rho` of the unconstrained integrand network by name:
#: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"softplus"`` and ``"erf"``.
#:
#: :meta hide-value:
HIDDEN: Mapping[str, HiddenActivation] = {
    "relu": HiddenActivation("relu", torch.relu, _relu_derivative, _relu_derivative),
    "tanh": HiddenActivation("tanh", torch.tanh, _tanh_derivative, lambda r: 1.0 - r.square()),
    "sigmoid": HiddenActivation(
        "sigmoid", torch.sigmoid, _sigmoid_derivative, lambda r: r * (1.0 - r)
    ),
    # sigmoid(u) = 1 - e^-softplus(u).
    "softplus": HiddenActivation("softplus", F.softplus, torch.sigmoid, lambda r: -torch.expm1(-r)),
    "erf": HiddenActivation("erf", torch.erf, _erf_derivative),
}

#: The positive functions :math:`\phi` of the unconstrained integrand by name:
#: ``"elu_plus_one"`` and ``"softplus"`` (shifted so that :math:`\phi(0) = 1`).
#:
#: :meta hide-value:
POSITIVE: Mapping[str, PositiveFunction] = {
    "elu_plus_one": PositiveFunction(
        "elu_plus_one", _elu_plus_one, _elu_plus_one_derivative, _log_elu_plus_one
    ),
    "softplus": PositiveFunction(
        "softplus", _shifted_softplus, _shifted_softplus_derivative, _log_shifted_softplus
    ),
}


def _registered(table: str, name: str):
    return {"SATURATING": SATURATING, "HIDDEN": HIDDEN, "POSITIVE": POSITIVE}[table][name]


def lookup(table: Mapping[str, object], name: str, argument: str):
    """Return ``table[name]`` or raise a ValueError naming ``argument`` and the allowed values.

    >>> lookup(HIDDEN, "tanh", "activation").name
    'tanh'
    >>> lookup(SATURATING, "relu", "activation")
    Traceback (most recent call last):
    ...
    ValueError: unknown activation 'relu'; allowed values are 'tanh', 'sigmoid'
    """
    return table[check_choice(name, table, argument)]
