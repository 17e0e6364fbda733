"""Pyro TransformModules built on the scalar monotone maps."""

from .autoregressive import (
    ConditionalConstrainedMonotoneAutoregressive,
    ConditionalUnconstrainedMonotoneAutoregressive,
    ConstrainedMonotoneAutoregressive,
    UnconstrainedMonotoneAutoregressive,
    conditional_constrained_monotone_autoregressive,
    conditional_unconstrained_monotone_autoregressive,
    constrained_monotone_autoregressive,
    unconstrained_monotone_autoregressive,
)
from .base import MonotoneTransformModule
from .constrained import ConstrainedMonotone, constrained_monotone
from .coupling import (
    ConditionalConstrainedMonotoneCoupling,
    ConditionalUnconstrainedMonotoneCoupling,
    ConstrainedMonotoneCoupling,
    UnconstrainedMonotoneCoupling,
    conditional_constrained_monotone_coupling,
    conditional_unconstrained_monotone_coupling,
    constrained_monotone_coupling,
    unconstrained_monotone_coupling,
)
from .unconstrained import UnconstrainedMonotone, unconstrained_monotone

__all__ = [
    "ConditionalConstrainedMonotoneAutoregressive",
    "ConditionalConstrainedMonotoneCoupling",
    "ConditionalUnconstrainedMonotoneAutoregressive",
    "ConditionalUnconstrainedMonotoneCoupling",
    "ConstrainedMonotone",
    "ConstrainedMonotoneAutoregressive",
    "ConstrainedMonotoneCoupling",
    "MonotoneTransformModule",
    "UnconstrainedMonotone",
    "UnconstrainedMonotoneAutoregressive",
    "UnconstrainedMonotoneCoupling",
    "conditional_constrained_monotone_autoregressive",
    "conditional_constrained_monotone_coupling",
    "conditional_unconstrained_monotone_autoregressive",
    "conditional_unconstrained_monotone_coupling",
    "constrained_monotone",
    "constrained_monotone_autoregressive",
    "constrained_monotone_coupling",
    "unconstrained_monotone",
    "unconstrained_monotone_autoregressive",
    "unconstrained_monotone_coupling",
]
