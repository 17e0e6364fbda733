"""Pure-torch numerics under the maps: quadrature, exact piecewise integration, root finding,
and the compilation of fused kernels."""

from . import native  # noqa: F401  (the native kernels, numerics.native)
from .piecewise import RELU_INTEGRANDS, relu_integral
from .quadrature import QUADRATURE_RULES, integrate_one_hidden_layer, quadrature_rule
from .root_finding import bracket_increasing, solve_increasing, solver_tolerance

__all__ = [
    "QUADRATURE_RULES",
    "RELU_INTEGRANDS",
    "bracket_increasing",
    "integrate_one_hidden_layer",
    "quadrature_rule",
    "relu_integral",
    "solve_increasing",
    "solver_tolerance",
]
