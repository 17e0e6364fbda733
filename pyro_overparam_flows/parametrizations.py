r"""Width-aware initialization of the one-hidden-layer networks.

A parametrization fixes the output multiplier :math:`c_m`, the spread of the initial weights, and
with them how training behaves as the width m grows. For a scalar input (fan-in 1):

================  ==================  ==================  ==============  ======================
name              hidden w, b         output a            :math:`c_m`     regime as m grows
================  ==================  ==================  ==============  ======================
``standard``      N(0, 1)             N(0, 1/m)           1               kernel changes with m
``ntk``           N(0, 1)             N(0, 1)             1/sqrt(m)       lazy (frozen kernel)
``mean_field``    N(0, 1)             N(0, 1)             1/m             feature learning
================  ==================  ==================  ==============  ======================

Width-aware means the map at initialization does not drift with m:

* **constrained** flows take :math:`w = |N(0, 1)|` and a positive a. A sum of m positive terms
  grows like :math:`m c_m`, so a is drawn as :math:`|z| / (m c_m \sqrt{2/\pi})`, z ~ N(0, 1):
  then :math:`c_m \sum_r a_r = 1` in expectation and :math:`f(x) - s x - \beta` is an average of
  m sigmoids, whose statistics settle as m grows. :math:`c_m` itself, and so the gradient scale
  and the learning-rate scaling, stays the parametrization's.
* **unconstrained** flows draw m/2 units and repeat them with opposite output weights
  (the antisymmetric initialization of Chizat, Oyallon & Bach 2019), so :math:`N \equiv 0` and
  :math:`\phi(N) = 1`: the flow starts as exactly :math:`x \mapsto x + \beta` for every m, while
  every weight keeps the parametrization's distribution and gradients are not zero.

The paper's own initializations are kept as presets so that its runs repeat exactly (no width
calibration, no pairing):

* constrained ``"standard-normal"``: :math:`w = |N(0,1)|`, b ~ N(0, 1),
  :math:`a = |N(0, 0.005^2)|`, :math:`c_m = 1/\sqrt{m}`;
  ``"sqrt-(m)"``: :math:`w = |N(0,1/m)|`, b ~ N(0, 1/m), :math:`a = |N(0, 0.005^2)|`, c = 1.
* unconstrained ``"gaussian-sqrt(m)"``: w, b ~ N(0, 1/m), a ~ N(0, 0.25^2) not trained, c = 1;
  ``"gaussian-std"``: w, b ~ N(0, 1), a ~ N(0, 0.25^2) not trained, :math:`c_m = 1/\sqrt{m}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = [
    "CONSTRAINED_PARAMETRIZATIONS",
    "UNCONSTRAINED_PARAMETRIZATIONS",
    "InitialNetwork",
    "Parametrization",
    "initial_constrained_network",
    "initial_unconstrained_network",
]


@dataclass(frozen=True)
class Parametrization:
    r"""Initial spreads and output multiplier as functions of the width m: the network
    :math:`c_m \sum_{r=1}^m a_r\,\rho(w_r x + b_r)` starts with w and b of standard deviation
    ``hidden_std(m)``, a of ``output_std(m)`` (before the constrained family's width-aware
    calibration of a), and :math:`c_m` = ``multiplier(m)`` (the table above).
    ``train_output=False`` freezes a; ``width_aware=False`` marks the paper's presets.

    >>> ntk = UNCONSTRAINED_PARAMETRIZATIONS["ntk"]
    >>> ntk.hidden_std(16), ntk.output_std(16), ntk.multiplier(16)  # c_m = 1 / sqrt(m)
    (1.0, 1.0, 0.25)
    >>> UNCONSTRAINED_PARAMETRIZATIONS["gaussian-std"].train_output
    False
    """

    name: str
    hidden_std: Callable[[int], float]
    output_std: Callable[[int], float]
    multiplier: Callable[[int], float]
    train_output: bool = True
    width_aware: bool = True


class InitialNetwork(NamedTuple):
    """Initial values, each of shape ``(input_dim, width)``; a is positive for constrained flows.

    >>> net = initial_unconstrained_network(2, 4, UNCONSTRAINED_PARAMETRIZATIONS["ntk"])
    >>> tuple(net.hidden_weight.shape), net.multiplier, net.train_output
    ((2, 4), 0.5, True)
    """

    hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor
    output_weight: torch.Tensor
    multiplier: float
    train_output: bool


_one = lambda m: 1.0  # noqa: E731
_inv_sqrt = lambda m: 1.0 / math.sqrt(m)  # noqa: E731

_GENERIC = {
    "standard": Parametrization("standard", _one, _inv_sqrt, _one),
    "ntk": Parametrization("ntk", _one, _one, _inv_sqrt),
    "mean_field": Parametrization("mean_field", _one, _one, lambda m: 1.0 / m),
}

#: The parametrizations of the constrained family by name: ``"standard"``, ``"ntk"``,
#: ``"mean_field"`` (width-aware) and the paper's presets ``"standard-normal"`` and
#: ``"sqrt-(m)"``.
#:
#: :meta hide-value:
CONSTRAINED_PARAMETRIZATIONS: Mapping[str, Parametrization] = {
    **_GENERIC,
    "standard-normal": Parametrization(
        "standard-normal", _one, lambda m: 0.005, _inv_sqrt, width_aware=False
    ),
    "sqrt-(m)": Parametrization("sqrt-(m)", _inv_sqrt, lambda m: 0.005, _one, width_aware=False),
}

#: The parametrizations of the unconstrained family by name: ``"standard"``, ``"ntk"``,
#: ``"mean_field"`` (width-aware) and the paper's presets ``"gaussian-sqrt(m)"`` and
#: ``"gaussian-std"`` (output layer not trained).
#:
#: :meta hide-value:
UNCONSTRAINED_PARAMETRIZATIONS: Mapping[str, Parametrization] = {
    **_GENERIC,
    "gaussian-sqrt(m)": Parametrization(
        "gaussian-sqrt(m)", _inv_sqrt, lambda m: 0.25, _one, train_output=False, width_aware=False
    ),
    "gaussian-std": Parametrization(
        "gaussian-std", _one, lambda m: 0.25, _inv_sqrt, train_output=False, width_aware=False
    ),
}


def _normal(shape: tuple[int, ...], std: float) -> torch.Tensor:
    return torch.randn(shape) * std


def initial_constrained_network(
    input_dim: int, width: int, parametrization: Parametrization
) -> InitialNetwork:
    """Draw positive w and a and free b for ``input_dim`` constrained maps of width ``width``.

    >>> net = initial_constrained_network(2, 8, CONSTRAINED_PARAMETRIZATIONS["ntk"])
    >>> bool((net.hidden_weight > 0).all() and (net.output_weight > 0).all())
    True
    """
    p, m = parametrization, width
    shape = (input_dim, m)
    c = p.multiplier(m)
    w = _normal(shape, p.hidden_std(m)).abs()
    b = _normal(shape, p.hidden_std(m))
    if p.width_aware:
        a = torch.randn(shape).abs() / (m * c * math.sqrt(2.0 / math.pi))
    else:
        a = _normal(shape, p.output_std(m)).abs()
    # A weight drawn as exactly 0 would have log -inf; the paper's code floors at 1e-10 too.
    return InitialNetwork(w.clamp(min=1e-10), b, a.clamp(min=1e-10), c, p.train_output)


def initial_unconstrained_network(
    input_dim: int, width: int, parametrization: Parametrization
) -> InitialNetwork:
    """Draw w, b, a for ``input_dim`` unconstrained integrand networks of width ``width``.

    >>> net = initial_unconstrained_network(1, 6, UNCONSTRAINED_PARAMETRIZATIONS["standard"])
    >>> torch.equal(net.output_weight[:, :3], -net.output_weight[:, 3:])
    True
    """
    p, m = parametrization, width
    c = p.multiplier(m)
    if not p.width_aware:
        shape = (input_dim, m)
        w, b = _normal(shape, p.hidden_std(m)), _normal(shape, p.hidden_std(m))
        return InitialNetwork(w, b, _normal(shape, p.output_std(m)), c, p.train_output)
    half, odd = divmod(m, 2)
    shape = (input_dim, half + odd)
    w, b = _normal(shape, p.hidden_std(m)), _normal(shape, p.hidden_std(m))
    a = _normal((input_dim, half), p.output_std(m))
    # An odd width leaves one unit unpaired: its output weight starts at 0.
    a = torch.cat([a, -a, a.new_zeros(input_dim, odd)], -1)
    w = torch.cat([w[:, :half], w[:, :half], w[:, half:]], -1)
    b = torch.cat([b[:, :half], b[:, :half], b[:, half:]], -1)
    return InitialNetwork(w, b, a, c, p.train_output)
