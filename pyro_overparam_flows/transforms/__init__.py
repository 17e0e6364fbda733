"""Pyro TransformModules built on the scalar monotone maps."""

from .base import MonotoneTransformModule
from .constrained import ConstrainedMonotone, constrained_monotone
from .unconstrained import UnconstrainedMonotone, unconstrained_monotone

__all__ = [
    "ConstrainedMonotone",
    "MonotoneTransformModule",
    "UnconstrainedMonotone",
    "constrained_monotone",
    "unconstrained_monotone",
]
