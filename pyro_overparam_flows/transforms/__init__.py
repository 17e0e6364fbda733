"""Pyro TransformModules built on the scalar monotone maps."""

from .constrained import ConstrainedMonotone, constrained_monotone
from .unconstrained import UnconstrainedMonotone, unconstrained_monotone

__all__ = [
    "ConstrainedMonotone",
    "UnconstrainedMonotone",
    "constrained_monotone",
    "unconstrained_monotone",
]
