"""Constrained and unconstrained one-hidden-layer normalizing flows for Pyro, with width-aware
initialization (Shah, Deshpande, Goyal, AISTATS 2022)."""

from .transforms import (
    ConstrainedMonotone,
    UnconstrainedMonotone,
    constrained_monotone,
    unconstrained_monotone,
)

__version__ = "0.1.0"

__all__ = [
    "ConstrainedMonotone",
    "UnconstrainedMonotone",
    "__version__",
    "constrained_monotone",
    "unconstrained_monotone",
]
