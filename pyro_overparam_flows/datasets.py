"""Built-in data with known densities, for demos, tests and the paper's experiments; a user's own
samples read from a file and split into train and test sets; the paper's preprocessing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyro.distributions as dist
import torch

from .validation import check_positive_int, check_positive_number

__all__ = [
    "PAPER_DATASETS",
    "Preprocessed",
    "SAMPLE_FORMATS",
    "Split",
    "checkerboard",
    "checkerboard_distribution",
    "load_samples",
    "mixture_of_betas",
    "mixture_of_betas_distribution",
    "mixture_of_gaussians",
    "mixture_of_gaussians_5d",
    "mixture_of_gaussians_5d_distribution",
    "mixture_of_gaussians_distribution",
    "scale_to_ball",
    "split_samples",
    "zscore",
]


class Split(NamedTuple):
    """Train and test samples, shape ``(n, d)``, and the true distribution they come from (None
    for a user's data, whose density is not known).

    >>> data = mixture_of_gaussians(8, 4)
    >>> isinstance(data, Split), tuple(data.train.shape), tuple(data.test.shape)
    (True, (8, 1), (4, 1))
    >>> data.distribution.log_prob(data.test).shape  # the true log-density of each sample
    torch.Size([4])
    """

    train: torch.Tensor
    test: torch.Tensor
    distribution: dist.Distribution | None


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
    _check_sizes(train_size, test_size)
    generator = torch.Generator().manual_seed(seed)
    total = train_size + test_size
    sign = torch.randint(0, 2, (total, 1), generator=generator).to(dtype) * 2 - 1
    samples = separation * sign + torch.randn(total, 1, generator=generator, dtype=dtype)
    distribution = mixture_of_gaussians_distribution(separation, dtype=dtype)
    return Split(samples[:train_size], samples[train_size:], distribution)


def _check_sizes(train_size: int, test_size: int) -> None:
    check_positive_int(train_size, "train_size")
    check_positive_int(test_size, "test_size")


class _Mixture(dist.TorchDistribution):
    """A finite mixture of components given by a sampler and a log-density of a vector
    (the pieces need not share a family or a support, unlike ``MixtureSameFamily``)."""

    arg_constraints: dict = {}
    support = dist.constraints.real_vector

    def __init__(self, weights: torch.Tensor, components: list, dim: int):
        self.weights = weights
        self.components = components
        super().__init__(torch.Size(), torch.Size([dim]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        terms = [
            torch.log(w) + component.log_prob(value)
            for w, component in zip(self.weights, self.components, strict=True)
        ]
        return torch.logsumexp(torch.stack(terms), 0)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = tuple(sample_shape)
        return _draw(self, math.prod(shape), None).reshape(*shape, *self.event_shape)


class _Box:
    """Uniform on a product of intervals ``[low, low + width]`` (one per coordinate)."""

    def __init__(self, low: torch.Tensor, width: float):
        self.low, self.width = low, width

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        u = (value - self.low) / self.width
        inside = ((u >= 0) & (u <= 1)).all(-1)
        density = -value.shape[-1] * math.log(self.width)
        return torch.where(inside, value.new_tensor(density), value.new_tensor(-math.inf))

    def draw(self, count: int, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(count, len(self.low), generator=generator, dtype=self.low.dtype)
        return self.low + self.width * u


class _ScaledBeta:
    """``low + scale * u`` (``scale`` may be negative: mirrored) with u ~ Beta(a, b), in 1-D."""

    def __init__(self, a: float, b: float, low: float, scale: float, dtype: torch.dtype):
        self.beta = dist.Beta(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype))
        self.low, self.scale = low, scale

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        u = ((value - self.low) / self.scale).squeeze(-1)
        inside = (u > 0) & (u < 1)
        inner = self.beta.log_prob(u.clamp(1e-300, 1 - 1e-16)) - math.log(abs(self.scale))
        return torch.where(inside, inner, u.new_tensor(-math.inf))

    def draw(self, count: int, generator: torch.Generator | None) -> torch.Tensor:
        # Beta as a ratio of Gammas, from the generator: G_a / (G_a + G_b).
        a, b = self.beta.concentration1, self.beta.concentration0
        shape = (count, 1)
        g_a = torch._standard_gamma(a.expand(shape).contiguous(), generator=generator)
        g_b = torch._standard_gamma(b.expand(shape).contiguous(), generator=generator)
        return self.low + self.scale * g_a / (g_a + g_b)


class _Gaussian:
    def __init__(self, loc: torch.Tensor, scale: float):
        self.normal = dist.Normal(loc, scale).to_event(1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.normal.log_prob(value)

    def draw(self, count: int, generator: torch.Generator | None) -> torch.Tensor:
        loc = self.normal.base_dist.loc
        noise = torch.randn(count, len(loc), generator=generator, dtype=loc.dtype)
        return loc + self.normal.base_dist.scale * noise


def _draw(mixture: _Mixture, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` samples of ``mixture``: a component per sample, then a draw from each."""
    choice = torch.multinomial(mixture.weights, count, replacement=True, generator=generator)
    samples = torch.empty(count, mixture.event_shape[0], dtype=mixture.weights.dtype)
    for k, component in enumerate(mixture.components):
        rows = (choice == k).nonzero().squeeze(-1)
        samples[rows] = component.draw(len(rows), generator)
    return samples


def mixture_of_betas_distribution(*, dtype: torch.dtype = torch.float64) -> dist.Distribution:
    r"""The paper's 1-D mixture of Betas on (-1, 1): half the mass Beta(4.4, 4.4) rescaled to
    (-0.4, 0.4); a quarter :math:`0.4 + 0.6\,u`, u ~ Beta(4, 2.6), on (0.4, 1); and its mirror
    image on (-1, -0.4). Event shape ``(1,)``.

    >>> p = mixture_of_betas_distribution()
    >>> float(p.log_prob(torch.tensor([[2.0]], dtype=torch.float64)))
    -inf
    """
    weights = torch.tensor([0.5, 0.25, 0.25], dtype=dtype)
    components = [
        _ScaledBeta(4.4, 4.4, -0.4, 0.8, dtype),
        _ScaledBeta(4.0, 2.6, 0.4, 0.6, dtype),
        _ScaledBeta(4.0, 2.6, -0.4, -0.6, dtype),
    ]
    return _Mixture(weights, components, 1)


def checkerboard_distribution(*, dtype: torch.dtype = torch.float64) -> dist.Distribution:
    r"""The paper's 2-D grid: uniform on the 8 unit squares of :math:`[0, 4]^2` whose corner
    :math:`(i, j)` has :math:`i + j` even (density 1/8 there, 0 elsewhere).

    >>> p = checkerboard_distribution()
    >>> p.log_prob(torch.tensor([[0.5, 0.5], [1.5, 0.5]], dtype=torch.float64)).exp()
    tensor([0.1250, 0.0000], dtype=torch.float64)
    """
    corners = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    weights = torch.full((len(corners),), 1.0 / len(corners), dtype=dtype)
    components = [_Box(torch.tensor(corner, dtype=dtype), 1.0) for corner in corners]
    return _Mixture(weights, components, 2)


def mixture_of_gaussians_5d_distribution(
    *, dtype: torch.dtype = torch.float64
) -> dist.Distribution:
    r"""The paper's 5-D mixture: equal weights on 10 Gaussians at :math:`\pm e_i` with
    isotropic standard deviation :math:`\sqrt{0.05}`.

    >>> mixture_of_gaussians_5d_distribution().event_shape
    torch.Size([5])
    """
    eye = torch.eye(5, dtype=dtype)
    centers = torch.cat([eye, -eye])
    weights = torch.full((10,), 0.1, dtype=dtype)
    components = [_Gaussian(center, math.sqrt(0.05)) for center in centers]
    return _Mixture(weights, components, 5)


def _split(distribution: _Mixture, train_size: int, test_size: int, seed: int) -> Split:
    _check_sizes(train_size, test_size)
    generator = torch.Generator().manual_seed(seed)
    samples = _draw(distribution, train_size + test_size, generator)
    return Split(samples[:train_size], samples[train_size:], distribution)


def mixture_of_betas(
    train_size: int = 9_000,
    test_size: int = 1_000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Split:
    """Samples of :func:`mixture_of_betas_distribution`, reproducible from ``seed`` (a private
    generator; the global RNG is untouched). The paper uses 10,000 samples split 90/10.

    >>> mixture_of_betas(100, 10).train.shape
    torch.Size([100, 1])
    """
    return _split(mixture_of_betas_distribution(dtype=dtype), train_size, test_size, seed)


def checkerboard(
    train_size: int = 9_000,
    test_size: int = 1_000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Split:
    """Samples of :func:`checkerboard_distribution` (the paper's 2-D grid), reproducible from
    ``seed``.

    >>> checkerboard(100, 10).train.shape
    torch.Size([100, 2])
    """
    return _split(checkerboard_distribution(dtype=dtype), train_size, test_size, seed)


def mixture_of_gaussians_5d(
    train_size: int = 9_000,
    test_size: int = 1_000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Split:
    """Samples of :func:`mixture_of_gaussians_5d_distribution`, reproducible from ``seed``.

    >>> mixture_of_gaussians_5d(100, 10).test.shape
    torch.Size([10, 5])
    """
    return _split(mixture_of_gaussians_5d_distribution(dtype=dtype), train_size, test_size, seed)


#: The file formats :func:`load_samples` reads, by suffix; any other suffix is read as text.
SAMPLE_FORMATS = {
    ".npy": "a NumPy array of shape (n,) or (n, d)",
    ".csv": "comma-separated values, one sample per line, a header line allowed",
    ".txt": "whitespace-separated values, one sample per line (the paper's data files)",
}


def _read_text(path: Path, delimiter: str | None) -> np.ndarray:
    with path.open() as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        [float(token) for token in first.replace(",", " ").split()]
        header = 0
    except ValueError:  # a header line of column names, as CSV files often have
        header = 1
    return np.loadtxt(path, delimiter=delimiter, ndmin=2, skiprows=header)


def load_samples(path: str | Path, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Samples from a file, shape ``(n, d)``: a ``.npy`` array, comma-separated ``.csv`` (a
    header line allowed) or whitespace-separated text (any other suffix; the paper's data files),
    one sample per line.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "samples.txt"
    ...     _ = path.write_text("0.5 1.0\n-0.25 2.0\n1.5 -1.0\n")
    ...     load_samples(path).shape
    torch.Size([3, 2])
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = _read_text(path, "," if path.suffix.lower() == ".csv" else None)
        values = np.asarray(values, dtype=np.float64)
    except ValueError as error:
        formats = "; ".join(f"{suffix}: {what}" for suffix, what in SAMPLE_FORMATS.items())
        raise ValueError(
            f"could not read samples from {str(path)!r} ({error}); {formats}"
        ) from None
    samples = torch.as_tensor(values, dtype=dtype)
    if samples.dim() == 1:
        samples = samples.unsqueeze(-1)
    if samples.dim() != 2 or len(samples) < 2 or samples.shape[-1] < 1:
        raise ValueError(
            f"{str(path)!r} must hold at least 2 samples of shape (n, d), got shape "
            f"{tuple(samples.shape)}"
        )
    bad = ~torch.isfinite(samples).all(-1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"{str(path)!r} has NaN or infinite values (first in sample {row})")
    return samples


def split_samples(
    samples: torch.Tensor | np.ndarray, test_fraction: float = 0.1, seed: int = 0
) -> Split:
    """A user's samples, shape ``(n, d)`` (or ``(n,)``), shuffled by ``seed`` and split into a
    training set and a held-out test set of ``test_fraction`` of them (at least one sample
    each); their density is not known (``distribution`` None).

    >>> data = split_samples(torch.arange(20.0).reshape(10, 2), test_fraction=0.2)
    >>> tuple(data.train.shape), tuple(data.test.shape), data.distribution
    ((8, 2), (2, 2), None)
    """
    samples = torch.as_tensor(samples)
    if not samples.is_floating_point():
        samples = samples.double()
    if samples.dim() == 1:
        samples = samples.unsqueeze(-1)
    if samples.dim() != 2 or len(samples) < 2:
        raise ValueError(f"samples must have shape (n, d) with n >= 2, got {tuple(samples.shape)}")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain NaN or infinite values")
    if not (isinstance(test_fraction, float | int) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    test = min(max(round(test_fraction * len(samples)), 1), len(samples) - 1)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
    shuffled = samples[order]
    return Split(shuffled[test:], shuffled[:test], None)


#: The paper's four data sets by name: each a function ``(train_size, test_size, *, seed,
#: dtype) -> Split``.
PAPER_DATASETS = {
    "mixture_of_gaussians": mixture_of_gaussians,
    "mixture_of_betas": mixture_of_betas,
    "checkerboard": checkerboard,
    "mixture_of_gaussians_5d": mixture_of_gaussians_5d,
}


class Preprocessed(NamedTuple):
    r"""Preprocessed train and test samples and the affine map T that made them from the raw
    ones: a density fitted to the preprocessed data scores raw data through
    ``TransformedDistribution(fitted, [transform.inv])``, i.e.
    :math:`\log p_{\mathrm{raw}}(x) = \log p(T x) + \log|\det T|`.

    >>> split = checkerboard(100, 10)
    >>> data = zscore(split)
    >>> isinstance(data, Preprocessed), torch.allclose(data.transform.inv(data.train), split.train)
    (True, True)
    """

    train: torch.Tensor
    test: torch.Tensor
    transform: dist.transforms.AffineTransform


def _affine(split: Split, loc: torch.Tensor, scale: torch.Tensor) -> Preprocessed:
    transform = dist.transforms.AffineTransform(-loc * scale, scale, event_dim=1)
    return Preprocessed(transform(split.train), transform(split.test), transform)


def zscore(split: Split) -> Preprocessed:
    """The paper's preprocessing for constrained flows: each coordinate centred and scaled to unit
    variance with the training set's mean and standard deviation.

    >>> data = zscore(mixture_of_betas(1000, 100))
    >>> abs(float(data.train.mean())) < 1e-12, round(float(data.train.std()), 12)
    (True, 1.0)
    """
    mean, std = split.train.mean(0), split.train.std(0)
    return _affine(split, mean, 1.0 / std)


def scale_to_ball(split: Split, radius: float = 0.5) -> Preprocessed:
    """The paper's preprocessing for unconstrained flows: all samples divided by the largest
    training norm over ``radius``, so the training set lies in the ball of that radius.

    >>> data = scale_to_ball(checkerboard(1000, 100))
    >>> round(float(data.train.norm(dim=-1).max()), 12)
    0.5
    """
    check_positive_number(radius, "radius")
    largest = split.train.norm(dim=-1).max()
    # One scale per coordinate, so that the map's log-determinant counts every dimension.
    return _affine(
        split, torch.zeros_like(split.train[0]), torch.full_like(split.train[0], radius) / largest
    )
