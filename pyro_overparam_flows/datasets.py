"""Built-in data with known densities, for demos, tests and the paper's experiments."""

from __future__ import annotations

from typing import NamedTuple

import pyro.distributions as dist
import torch

__all__ = ["Split", "mixture_of_gaussians", "mixture_of_gaussians_distribution"]


class Split(NamedTuple):
    """Train and test samples, shape ``(n, 1)``, and the true distribution they come from."""

    train: torch.Tensor
    test: torch.Tensor
    distribution: dist.Distribution


def mixture_of_gaussians_distribution(
    separation: float = 2.5, *, dtype: torch.dtype = torch.float64
) -> dist.Distribution:
    r"""The paper's 1-D mixture :math:`\tfrac12 N(-\delta, 1) + \tfrac12 N(\delta, 1)`, with
    event shape ``(1,)`` so that it scores samples of shape ``(n, 1)``.

    >>> p = mixture_of_gaussians_distribution()
    >>> p.log_prob(torch.zeros(1, 1, dtype=torch.float64)).shape
    torch.Size([1])
    """
    mixing = dist.Categorical(torch.full((2,), 0.5, dtype=dtype))
    components = dist.Normal(torch.tensor([-separation, separation], dtype=dtype), 1.0)
    return dist.MixtureSameFamily(mixing, components).expand([1]).to_event(1)


def mixture_of_gaussians(
    train_size: int = 10_000,
    test_size: int = 10_000,
    *,
    separation: float = 2.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Split:
    r"""Samples of :func:`mixture_of_gaussians_distribution`, reproducible from ``seed``.

    The paper (Shah et al. 2022, section 5) fits flows to this mixture with
    :math:`\delta = 2.5`.

    :param int train_size: number of training samples.
    :param int test_size: number of test samples.
    :param float separation: the component means are :math:`\pm` ``separation``.
    :param int seed: seed of a private generator (the global RNG is untouched).
    :returns: a :class:`Split`.

    >>> data = mixture_of_gaussians(100, 50)
    >>> data.train.shape, data.test.shape
    (torch.Size([100, 1]), torch.Size([50, 1]))
    """
    for name, size in (("train_size", train_size), ("test_size", test_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {size!r}")
    generator = torch.Generator().manual_seed(seed)
    total = train_size + test_size
    sign = torch.randint(0, 2, (total, 1), generator=generator).to(dtype) * 2 - 1
    samples = separation * sign + torch.randn(total, 1, generator=generator, dtype=dtype)
    distribution = mixture_of_gaussians_distribution(separation, dtype=dtype)
    return Split(samples[:train_size], samples[train_size:], distribution)
