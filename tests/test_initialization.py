"""Width-aware initialization: the map at init does not drift with the width; presets repeat
the paper's draws."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_overparam_flows import ConstrainedMonotone, UnconstrainedMonotone
from pyro_overparam_flows.parametrizations import (
    CONSTRAINED_PARAMETRIZATIONS,
    UNCONSTRAINED_PARAMETRIZATIONS,
)

WIDTH_AWARE = ("standard", "ntk", "mean_field")
GRID = torch.linspace(-3, 3, 25, dtype=torch.float64).unsqueeze(-1)
SEEDS = 200


def statistics_over_seeds(factory, width, seeds=SEEDS):
    """Per seed: the mean and spread over the grid of f(x) and of log f'(x)."""
    rows = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        transform = factory(width).double()
        with torch.no_grad():
            y = transform(GRID)
            log_slope = transform.log_abs_det_jacobian(GRID, y)
        rows.append(torch.stack([y.mean(), y.std(), log_slope.mean(), log_slope.std()]))
    return torch.stack(rows)  # (seeds, 4)


def assert_same_distribution(narrow, wide):
    """Mean of each statistic over seeds agrees within 4 standard errors of the difference."""
    difference = narrow.mean(0) - wide.mean(0)
    standard_error = torch.sqrt(narrow.var(0) / len(narrow) + wide.var(0) / len(wide))
    assert bool((difference.abs() <= 4 * standard_error + 1e-12).all()), (
        difference,
        standard_error,
    )


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("parametrization", WIDTH_AWARE)
def test_constrained_init_does_not_drift_with_width(parametrization, activation):
    def factory(m):
        return ConstrainedMonotone(1, m, activation=activation, parametrization=parametrization)

    assert_same_distribution(
        statistics_over_seeds(factory, 16), statistics_over_seeds(factory, 4096)
    )


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("parametrization", WIDTH_AWARE)
def test_unconstrained_init_is_the_identity_at_every_width(parametrization, activation):
    def factory(m):
        return UnconstrainedMonotone(1, m, activation=activation, parametrization=parametrization)

    narrow, wide = statistics_over_seeds(factory, 16, 20), statistics_over_seeds(factory, 4096, 20)
    assert_same_distribution(narrow, wide)
    # f(x) = x exactly (offset 0, N = 0, phi(0) = 1) and log f' = 0, for both widths.
    expected = torch.tensor([float(GRID.mean()), float(GRID.std()), 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(narrow, expected.expand_as(narrow), rtol=0, atol=1e-12)
    torch.testing.assert_close(wide, expected.expand_as(wide), rtol=0, atol=1e-12)


@pytest.mark.parametrize("parametrization", WIDTH_AWARE)
def test_unconstrained_init_keeps_the_parametrization_spread(parametrization):
    # Pairing makes N = 0 without shrinking any weight: each half has the scheme's spread.
    torch.manual_seed(0)
    m = 4096
    transform = UnconstrainedMonotone(1, m, parametrization=parametrization)
    setting = UNCONSTRAINED_PARAMETRIZATIONS[parametrization]
    half = transform.output_weight[0, : m // 2].detach()
    assert float(half.std()) == pytest.approx(setting.output_std(m), rel=0.05)
    assert float(transform.hidden_weight.detach().std()) == pytest.approx(
        setting.hidden_std(m), rel=0.05
    )
    assert transform.multiplier == pytest.approx(setting.multiplier(m))


@pytest.mark.parametrize(
    "name,hidden_std,multiplier",
    [("standard-normal", 1.0, lambda m: 1 / math.sqrt(m)), ("sqrt-(m)", None, lambda m: 1.0)],
)
def test_constrained_presets_repeat_the_paper(name, hidden_std, multiplier):
    torch.manual_seed(0)
    m = 20000
    transform = ConstrainedMonotone(1, m, parametrization=name, tail=False)
    expected_std = hidden_std if hidden_std is not None else 1 / math.sqrt(m)
    # Half-normal |N(0, s^2)| has mean s sqrt(2 / pi).
    half_normal_mean = math.sqrt(2 / math.pi)
    w, a = transform.hidden_weight.detach(), transform.output_weight.detach()
    assert float(w.mean()) == pytest.approx(expected_std * half_normal_mean, rel=0.03)
    assert float(transform.hidden_bias.detach().std()) == pytest.approx(expected_std, rel=0.03)
    assert float(a.mean()) == pytest.approx(0.005 * half_normal_mean, rel=0.03)
    assert transform.multiplier == pytest.approx(multiplier(m))
    assert transform.parametrization == name and not CONSTRAINED_PARAMETRIZATIONS[name].width_aware


@pytest.mark.parametrize(
    "name,hidden_std,multiplier",
    [("gaussian-sqrt(m)", None, lambda m: 1.0), ("gaussian-std", 1.0, lambda m: 1 / math.sqrt(m))],
)
def test_unconstrained_presets_repeat_the_paper(name, hidden_std, multiplier):
    torch.manual_seed(0)
    m = 20000
    transform = UnconstrainedMonotone(1, m, parametrization=name)
    expected_std = hidden_std if hidden_std is not None else 1 / math.sqrt(m)
    assert float(transform.hidden_weight.detach().std()) == pytest.approx(expected_std, rel=0.03)
    assert float(transform.hidden_bias.detach().std()) == pytest.approx(expected_std, rel=0.03)
    assert float(transform.output_weight.std()) == pytest.approx(0.25, rel=0.03)
    assert transform.multiplier == pytest.approx(multiplier(m))
    # The paper does not train the output layer: it is a buffer, not a parameter.
    names = {n for n, _ in transform.named_parameters()}
    assert "output_weight" not in names and "hidden_weight" in names
    assert "output_weight" in dict(transform.named_buffers())
