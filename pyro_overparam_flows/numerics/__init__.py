"""Pure-torch numerics under the maps: quadrature, exact piecewise integration, root finding."""

from .piecewise import relu_elu_integral
from .quadrature import QUADRATURE_RULES, integrate_one_hidden_layer, quadrature_rule
from .root_finding import bracket_increasing, solve_increasing, solver_tolerance

__all__ = [
    "QUADRATURE_RULES",
    "bracket_increasing",
    "integrate_one_hidden_layer",
    "quadrature_rule",
    "relu_elu_integral",
    "solve_increasing",
    "solver_tolerance",
]
