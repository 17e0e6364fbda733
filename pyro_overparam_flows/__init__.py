"""Constrained and unconstrained one-hidden-layer normalizing flows for Pyro, with width-aware
initialization (Shah, Deshpande, Goyal, AISTATS 2022)."""

from .transforms import *  # noqa: F403
from .transforms import __all__ as _transforms

#: The package version.
__version__ = "0.2.0"

__all__ = [*_transforms, "__version__"]
