"""Bad input raises a ValueError that names the argument and what is allowed."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_overparam_flows import (
    ConstrainedMonotone,
    ConstrainedMonotoneAutoregressive,
    ConstrainedMonotoneCoupling,
    UnconstrainedMonotone,
    UnconstrainedMonotoneAutoregressive,
    conditional_constrained_monotone_autoregressive,
    conditional_constrained_monotone_coupling,
    conditional_unconstrained_monotone_autoregressive,
    conditional_unconstrained_monotone_coupling,
    constrained_monotone,
    constrained_monotone_autoregressive,
    constrained_monotone_coupling,
    unconstrained_monotone,
    unconstrained_monotone_autoregressive,
    unconstrained_monotone_coupling,
)
from pyro_overparam_flows.maps import constrained_range
from pyro_overparam_flows.numerics import quadrature_rule
from pyro_overparam_flows.transforms.conditioners import bounded_log_scale

from helpers import perturb_

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
    with pytest.raises(ValueError, match="quadrature_nodes must be an integer >= 1"):
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


MULTIVARIATE_HELPERS = [
    constrained_monotone_autoregressive,
    unconstrained_monotone_autoregressive,
    constrained_monotone_coupling,
    unconstrained_monotone_coupling,
    lambda d, **kw: conditional_constrained_monotone_autoregressive(d, 2, **kw),
    lambda d, **kw: conditional_unconstrained_monotone_autoregressive(d, 2, **kw),
    lambda d, **kw: conditional_constrained_monotone_coupling(d, 2, **kw),
    lambda d, **kw: conditional_unconstrained_monotone_coupling(d, 2, **kw),
]


@pytest.mark.parametrize("helper", MULTIVARIATE_HELPERS)
@pytest.mark.parametrize("width", [0, 2.5, True])
def test_multivariate_width_must_be_a_positive_integer(helper, width):
    with pytest.raises(ValueError, match=r"width must be an integer >= 1"):
        helper(3, width=width)


@pytest.mark.parametrize("helper", MULTIVARIATE_HELPERS)
@pytest.mark.parametrize("input_dim", [0, -1, 1.5])
def test_multivariate_input_dim_must_be_a_positive_integer(helper, input_dim):
    with pytest.raises(ValueError, match=r"input_dim must be an integer >= 1"):
        helper(input_dim)


@pytest.mark.parametrize(
    "helper",
    [conditional_unconstrained_monotone_autoregressive, conditional_constrained_monotone_coupling],
)
def test_context_dim_must_be_a_positive_integer(helper):
    with pytest.raises(ValueError, match=r"context_dim must be an integer >= 1"):
        helper(3, 0)


@pytest.mark.parametrize("helper", MULTIVARIATE_HELPERS)
def test_unknown_family_option(helper):
    with pytest.raises(ValueError, match=r"unknown parametrization 'xavier'"):
        helper(3, width=4, parametrization="xavier")


@pytest.mark.parametrize(
    "helper",
    [
        constrained_monotone_coupling,
        unconstrained_monotone_coupling,
        lambda d, **kw: conditional_unconstrained_monotone_coupling(d, 2, **kw),
    ],
)
def test_coupling_needs_two_dimensions_and_a_split_inside(helper):
    with pytest.raises(ValueError, match=r"coupling transform needs input_dim >= 2"):
        helper(1)
    for split_dim in (0, 4, 7, -1):
        with pytest.raises(ValueError, match=r"split_dim must satisfy 1 <= split_dim < input_dim"):
            helper(4, split_dim=split_dim)
    with pytest.raises(ValueError, match=r"split_dim must be an integer"):
        helper(4, split_dim=1.5)


@pytest.mark.parametrize(
    "helper",
    [
        conditional_constrained_monotone_autoregressive,
        conditional_unconstrained_monotone_autoregressive,
        conditional_constrained_monotone_coupling,
        conditional_unconstrained_monotone_coupling,
    ],
)
def test_context_of_the_wrong_size_or_kind(helper):
    transform = helper(3, 2, width=4)
    x = torch.randn(5, 3)
    with pytest.raises(
        ValueError, match=r"context must have shape \(\.\.\., 2\).*got shape \(5, 3\)"
    ):
        transform.condition(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"context must have shape"):
        transform.condition(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"context must be a floating-point torch.Tensor"):
        transform.condition([0.0, 1.0])
    with pytest.raises(ValueError, match=r"context contains NaN"):
        transform.condition(torch.tensor([0.0, float("nan")]))
    with pytest.raises(
        ValueError,
        match=r"batch shape \(4,\) does not broadcast against the input's batch shape \(5,\)",
    ):
        transform.condition(torch.randn(4, 2))(x)  # batch 4 against batch 5
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        transform.condition(torch.randn(2))(torch.randn(5, 4))


@pytest.mark.parametrize("helper", MULTIVARIATE_HELPERS)
def test_multivariate_input_checks(helper):
    transform = helper(3, width=4)
    transform = (
        transform.condition(torch.zeros(2)) if hasattr(transform, "condition") else transform
    )
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        transform(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"x contains NaN or infinite values"):
        transform(torch.tensor([[0.0, float("inf"), 1.0]]))
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values"):
        transform.inv(torch.tensor([[0.0, float("nan"), 1.0]]))


def test_conditioner_with_the_wrong_output():
    from pyro.nn import AutoRegressiveNN, DenseNN

    with pytest.raises(ValueError, match=r"last layer.*with bias and 24 outputs"):
        UnconstrainedMonotoneAutoregressive(3, AutoRegressiveNN(3, [9], param_dims=[5]), 6)
    transform = UnconstrainedMonotoneAutoregressive(
        3, AutoRegressiveNN(3, [9], param_dims=[5]), 6, init_conditioner=False
    )
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8, 3\).*got \(4, 5, 3\)"):
        transform(torch.randn(4, 3))
    coupling = ConstrainedMonotoneCoupling(
        4, 2, DenseNN(2, [8], param_dims=[10]), 4, init_conditioner=False
    )
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 14\).*got \(4, 10\)"):
        coupling(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"expose its variable order"):
        UnconstrainedMonotoneAutoregressive(3, torch.nn.Linear(3, 21), 6)
    with pytest.raises(ValueError, match=r"init_conditioner must be True or False"):
        UnconstrainedMonotoneAutoregressive(
            3, AutoRegressiveNN(3, [9], param_dims=[7]), 6, init_conditioner="yes"
        )


def test_inverse_outside_the_range_names_the_coordinate_and_its_scaled_range():
    from pyro.nn import AutoRegressiveNN, DenseNN

    arn = AutoRegressiveNN(2, [8], param_dims=[6], permutation=torch.tensor([1, 0]))
    transform = ConstrainedMonotoneAutoregressive(2, arn, 4, tail=False)
    with pytest.raises(ValueError, match=r"outside the range.*e\.g\. y\[0, 1\] = 1000,"):
        transform.inv(torch.tensor([[0.0, 1e3]]))
    hypernet = DenseNN(1, [8], param_dims=[6])
    coupling = ConstrainedMonotoneCoupling(2, 1, hypernet, 4, tail=False)
    with torch.no_grad():
        hypernet.layers[-1].bias[-1] = 2.0  # log-scale about 2 for coordinate 1
    net = coupling._condition_on(torch.zeros(1, 2)).network
    scale = torch.exp(bounded_log_scale(torch.tensor(2.0)))
    low, high = (b * scale for b in constrained_range(net, coupling.activation))
    with pytest.raises(ValueError) as error:
        coupling.inv(torch.tensor([[0.0, 20.0]]))
    message = str(error.value)
    assert "y[0, 1] = 20," in message
    assert f"({float(low.detach().squeeze()):.8g}, {float(high.detach().squeeze()):.8g})" in message
