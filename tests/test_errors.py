"""Bad input raises a ValueError that names the argument and what is allowed."""

from __future__ import annotations

import pyro
import pytest
import torch
from conftest import perturb_

from pyro_overparam_flows import (
    ConstrainedMonotone,
    UnconstrainedMonotone,
    constrained_monotone,
    unconstrained_monotone,
)
from pyro_overparam_flows.maps import constrained_range
from pyro_overparam_flows.numerics import quadrature_rule

HELPERS = [constrained_monotone, unconstrained_monotone]


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("width", [0, -3, 2.5, True, "8"])
def test_width_must_be_a_positive_integer(helper, width):
    with pytest.raises(ValueError, match=r"width must be an integer >= 1"):
        helper(2, width=width)


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("input_dim", [0, -1, 1.5])
def test_input_dim_must_be_a_positive_integer(helper, input_dim):
    with pytest.raises(ValueError, match=r"input_dim must be an integer >= 1"):
        helper(input_dim)


@pytest.mark.parametrize(
    "factory,argument,allowed",
    [
        (lambda: ConstrainedMonotone(1, parametrization="xavier"), "parametrization", "'ntk'"),
        (
            lambda: UnconstrainedMonotone(1, parametrization="ntk2"),
            "parametrization",
            "'mean_field'",
        ),
        (lambda: ConstrainedMonotone(1, activation="relu"), "activation", "'sigmoid'"),
        (lambda: UnconstrainedMonotone(1, activation="gelu"), "activation", "'erf'"),
        (lambda: ConstrainedMonotone(1, positivity="abs"), "positivity", "'projected'"),
        (lambda: UnconstrainedMonotone(1, phi="exp"), "phi", "'elu_plus_one'"),
        (
            lambda: UnconstrainedMonotone(1, integration="simpson"),
            "integration",
            "'gauss-legendre'",
        ),
        (lambda: quadrature_rule("simpson", 8), "quadrature", "'clenshaw-curtis'"),
    ],
)
def test_unknown_names_list_the_allowed_values(factory, argument, allowed):
    with pytest.raises(ValueError, match=f"unknown {argument} ") as info:
        factory()
    assert allowed in str(info.value)


@pytest.mark.parametrize("nodes", [0, -4, 2.0])
def test_quadrature_nodes_must_be_positive(nodes):
    with pytest.raises(ValueError, match="quadrature_nodes must be a positive integer"):
        UnconstrainedMonotone(1, activation="tanh", quadrature_nodes=nodes)


def test_exact_integration_needs_relu_and_elu():
    with pytest.raises(ValueError, match="integration='exact' needs activation='relu'"):
        UnconstrainedMonotone(1, activation="tanh", integration="exact")
    with pytest.raises(ValueError, match="quadrature_nodes applies to quadrature"):
        UnconstrainedMonotone(1, integration="exact", quadrature_nodes=16)


def test_projection_floor_must_be_positive():
    with pytest.raises(ValueError, match="projection_floor must be a positive number"):
        ConstrainedMonotone(1, positivity="projected", projection_floor=0.0)


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("shape", [(4, 2), (4,), (2, 3, 4)])
def test_last_dimension_must_be_input_dim(helper, shape):
    transform = helper(3, width=4)
    x = torch.zeros(shape)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        transform(x)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        transform.log_abs_det_jacobian(x, x)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3\)"):
        transform.inv(x)


@pytest.mark.parametrize("helper", HELPERS)
def test_scalar_and_integer_inputs_are_rejected(helper):
    transform = helper(1, width=4)
    with pytest.raises(ValueError, match=r"x must have shape"):
        transform(torch.tensor(0.0))
    with pytest.raises(ValueError, match="floating-point"):
        transform(torch.zeros(2, 1, dtype=torch.long))


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_rejected(helper, bad):
    transform = helper(2, width=4)
    value = torch.tensor([[0.0, 1.0], [bad, 2.0]])
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        transform(value)
    with pytest.raises(ValueError, match="y contains NaN or infinite values"):
        transform.inv(value)


def test_validation_off_skips_value_checks():
    # pyro.enable_validation(False) turns off the checks that read values back, for speed.
    transform = constrained_monotone(1, width=4, tail=False)
    pyro.enable_validation(False)
    y = transform.inv(torch.tensor([[1e6], [0.0]]))
    assert bool(torch.isnan(y[0]).all()) and bool(torch.isfinite(y[1]).all())


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_inverse_outside_a_bounded_range(activation):
    transform = constrained_monotone(2, width=8, activation=activation, tail=False)
    with torch.no_grad():
        low, high = constrained_range(transform.network(), transform.activation)
        y = torch.stack([(low + high) / 2, high + 1e3]).T[:1]  # dimension 0 fine, 1 out
    with pytest.raises(ValueError, match="inverse asked outside the range") as info:
        transform.inv(y)
    message = str(info.value)
    assert "1 value(s)" in message and "y[0, 1] = " in message and "open interval" in message
    assert f"({float(low[1]):.8g}, {float(high[1]):.8g})" in message


def test_unconverged_inverse_raises_instead_of_returning_a_non_root(monkeypatch):
    # A budget of one iteration cannot converge from a wide bracket: the transform must say so.
    from pyro_overparam_flows.transforms import unconstrained

    transform = perturb_(unconstrained_monotone(1, width=4, activation="tanh"), scale=1.0)
    solve = unconstrained.solve_increasing
    monkeypatch.setattr(
        unconstrained,
        "solve_increasing",
        lambda *args, **kwargs: solve(*args, **{**kwargs, "max_iterations": 1}),
    )
    with pytest.raises(ValueError, match="did not converge within 64 Newton iterations"):
        transform.inv(torch.tensor([[123.4]]))


@pytest.mark.parametrize("helper", HELPERS)
def test_input_dtype_must_match_the_parameters(helper):
    transform = helper(1, width=4)
    with pytest.raises(
        ValueError, match="x has dtype torch.float64 but the transform's parameters"
    ):
        transform(torch.zeros(2, 1, dtype=torch.float64))
