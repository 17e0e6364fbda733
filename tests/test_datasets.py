"""The paper's data sets: samples match the stated densities, densities integrate to 1."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.distributions import TransformedDistribution
from scipy import integrate, stats

from pyro_overparam_flows.datasets import (
    PAPER_DATASETS,
    checkerboard,
    checkerboard_distribution,
    mixture_of_betas,
    mixture_of_betas_distribution,
    mixture_of_gaussians_5d,
    mixture_of_gaussians_5d_distribution,
    scale_to_ball,
    zscore,
)


def betas_cdf(x):
    """The stated mixture's CDF from scipy's Beta CDFs (independent of the package's code)."""
    inner = stats.beta(4.4, 4.4, loc=-0.4, scale=0.8).cdf(x)
    right = stats.beta(4.0, 2.6, loc=0.4, scale=0.6).cdf(x)
    left = stats.beta(4.0, 2.6).sf((-0.4 - x) / 0.6)  # mirror: x = -0.4 - 0.6 u
    return 0.5 * inner + 0.25 * right + 0.25 * left


def test_mixture_of_betas_samples_follow_the_stated_distribution():
    data = mixture_of_betas(20_000, 1, seed=3)
    assert stats.kstest(data.train.squeeze(-1).numpy(), betas_cdf).pvalue > 0.01

    # A wrong mirror (the outer mode at 0.6 instead of 0.8) is detected at this size.
    def wrong(x):
        inner = stats.beta(4.4, 4.4, loc=-0.4, scale=0.8).cdf(x)
        right = stats.beta(2.6, 4.0, loc=0.4, scale=0.6).cdf(x)
        return 0.5 * inner + 0.25 * (right + stats.beta(2.6, 4.0).sf((-0.4 - x) / 0.6))

    assert stats.kstest(data.train.squeeze(-1).numpy(), wrong).pvalue < 1e-6


def test_mixture_of_betas_density_integrates_to_one_and_matches_the_cdf():
    p = mixture_of_betas_distribution()

    def density(x: float) -> float:
        return float(p.log_prob(torch.tensor([[x]], dtype=torch.float64)).exp())

    total = sum(
        integrate.quad(density, a, b, epsabs=1e-12)[0]
        for a, b in [(-1, -0.4), (-0.4, 0.4), (0.4, 1)]
    )
    assert total == pytest.approx(1.0, abs=1e-8)
    assert integrate.quad(density, -1, 0.1)[0] == pytest.approx(betas_cdf(0.1), abs=1e-8)


def test_checkerboard_samples_and_density():
    data = checkerboard(16_000, 1, seed=1)
    cells = data.train.floor().long()
    assert bool(((cells.sum(-1) % 2) == 0).all())  # only the even squares
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    even = torch.tensor([(i + j) % 2 == 0 for i in range(4) for j in range(4)])
    assert stats.chisquare(counts[even].numpy()).pvalue > 0.01
    # Uniform within a square: each coordinate's fractional part is U(0, 1).
    assert stats.kstest(data.train.frac().flatten().numpy(), "uniform").pvalue > 0.01
    # The density integrates to 1 (midpoint rule, exact for a piecewise-constant density).
    grid = (torch.arange(400, dtype=torch.float64) + 0.5) / 100
    points = torch.cartesian_prod(grid, grid)
    mass = checkerboard_distribution().log_prob(points).exp().sum() / 100**2
    assert float(mass) == pytest.approx(1.0, abs=1e-12)


def test_mixture_of_gaussians_5d_samples_and_density():
    data = mixture_of_gaussians_5d(20_000, 1, seed=2)
    x = data.train
    eye = torch.eye(5, dtype=torch.float64)
    centers = torch.cat([eye, -eye])
    nearest = torch.cdist(x, centers).argmin(-1)
    counts = torch.bincount(nearest, minlength=10)
    assert stats.chisquare(counts.numpy()).pvalue > 0.01
    residual = x - centers[nearest]
    # Components are well separated (distance sqrt(2) vs sd 0.22): residuals are N(0, 0.05 I).
    assert stats.kstest(residual.flatten().numpy() / math.sqrt(0.05), "norm").pvalue > 0.01
    # Importance sampling of the integral of the density with a wide Gaussian proposal.
    generator = torch.Generator().manual_seed(0)
    proposal = torch.randn(400_000, 5, generator=generator, dtype=torch.float64)
    log_q = -0.5 * proposal.square().sum(-1) - 2.5 * math.log(2 * math.pi)
    ratio = (mixture_of_gaussians_5d_distribution().log_prob(proposal) - log_q).exp()
    assert float(ratio.mean()) == pytest.approx(1.0, abs=4 * float(ratio.std()) / math.sqrt(4e5))


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_paper_datasets_are_seeded_and_leave_the_global_rng_alone(name):
    make = PAPER_DATASETS[name]
    state = torch.get_rng_state()
    first, second, other = make(50, 10, seed=4), make(50, 10, seed=4), make(50, 10, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.train, second.train) and not torch.equal(first.train, other.train)
    assert (
        first.train.dtype == torch.float64
        and make(5, 5, dtype=torch.float32).test.dtype == torch.float32
    )
    assert bool(torch.isfinite(first.distribution.log_prob(first.test)).all())
    with pytest.raises(ValueError, match="train_size must be an integer >= 1"):
        make(0, 10)


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_preprocessing_uses_training_statistics_and_changes_densities_by_its_jacobian(name):
    split = PAPER_DATASETS[name](2000, 500, seed=0)
    standardized = zscore(split)
    torch.testing.assert_close(
        standardized.train.mean(0),
        torch.zeros(split.train.shape[-1], dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    torch.testing.assert_close(
        standardized.train.std(0), torch.ones(split.train.shape[-1], dtype=torch.float64)
    )
    torch.testing.assert_close(
        standardized.test, (split.test - split.train.mean(0)) / split.train.std(0)
    )
    ball = scale_to_ball(split)
    assert float(ball.train.norm(dim=-1).max()) == pytest.approx(0.5)
    factor = 0.5 / split.train.norm(dim=-1).max()
    torch.testing.assert_close(ball.test, split.test * factor)
    # The preprocessed data's density is the raw one divided by the map's Jacobian.
    for pre in (standardized, ball):
        moved = TransformedDistribution(split.distribution, [pre.transform])
        log_det = pre.transform.log_abs_det_jacobian(split.test, pre.test)
        # Every dimension counts: against the determinant of the map's autograd Jacobian.
        jacobian = torch.autograd.functional.jacobian(pre.transform, split.test[0])
        assert float(log_det[0]) == pytest.approx(float(torch.linalg.det(jacobian).abs().log()))
        torch.testing.assert_close(
            moved.log_prob(pre.test), split.distribution.log_prob(split.test) - log_det
        )


def test_scale_to_ball_radius_must_be_positive():
    with pytest.raises(ValueError, match="radius must be a positive number"):
        scale_to_ball(checkerboard(10, 10), radius=0)
