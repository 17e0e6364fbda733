"""Pyro TransformModules built on the scalar monotone maps: a family of maps
(:mod:`.family`, :mod:`.constrained`, :mod:`.unconstrained`) inside a structure
(:mod:`.elementwise`, :mod:`.autoregressive`, :mod:`.coupling`)."""

from .autoregressive import (
    ConditionalConstrainedMonotoneAutoregressive,
    ConditionalMonotoneAutoregressive,
    ConditionalUnconstrainedMonotoneAutoregressive,
    ConstrainedMonotoneAutoregressive,
    MonotoneAutoregressive,
    UnconstrainedMonotoneAutoregressive,
    conditional_constrained_monotone_autoregressive,
    conditional_unconstrained_monotone_autoregressive,
    constrained_monotone_autoregressive,
    monotone_autoregressive,
    unconstrained_monotone_autoregressive,
)
from .constrained import ConstrainedMonotone, constrained_monotone
from .coupling import (
    ConditionalConstrainedMonotoneCoupling,
    ConditionalMonotoneCoupling,
    ConditionalUnconstrainedMonotoneCoupling,
    ConstrainedMonotoneCoupling,
    MonotoneCoupling,
    UnconstrainedMonotoneCoupling,
    conditional_constrained_monotone_coupling,
    conditional_unconstrained_monotone_coupling,
    constrained_monotone_coupling,
    monotone_coupling,
    unconstrained_monotone_coupling,
)
from .elementwise import MonotoneTransformModule
from .family import Family
from .unconstrained import UnconstrainedMonotone, unconstrained_monotone

__all__ = [
    "ConditionalMonotoneAutoregressive",
    "ConditionalMonotoneCoupling",
    "Family",
    "MonotoneAutoregressive",
    "MonotoneCoupling",
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
    "monotone_autoregressive",
    "monotone_coupling",
    "unconstrained_monotone",
    "unconstrained_monotone_autoregressive",
    "unconstrained_monotone_coupling",
]
