"""Helpers the tests share: tolerances, parameter perturbation, wide-range inputs, random
integrand networks and a scipy reference for the exact ReLU integral."""

from __future__ import annotations

import math

import torch
from scipy import integrate

from pyro_overparam_flows.activations import HIDDEN, POSITIVE

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def perturb_(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Add N(0, scale^2) noise to every parameter, so maps are tested away from initialization
    (where an unconstrained flow is exactly the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(scale * noise.to(parameter))
    return module


def spread(dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """x from -1e4 to 1e4: log-spaced magnitudes of both signs, and 0."""
    magnitudes = torch.logspace(-4, 4, 17, dtype=dtype, device=device)
    return torch.cat([-magnitudes.flip(0), magnitudes.new_zeros(1), magnitudes])


def random_network(width, batch=(), dim=1, seed=0, dtype=torch.float64):
    """w, b ~ N(0, 1), a ~ N(0, 1/m): an O(1) random integrand network, as after training."""
    generator = torch.Generator().manual_seed(seed)
    shape = (*batch, dim, width)
    w, b, a = (torch.randn(shape, generator=generator, dtype=dtype) for _ in range(3))
    return w, b, a / math.sqrt(width)


def network_integrand(w, b, a, c, rho, phi):
    """t -> phi(N(t)) for one scalar network, in float64 numpy, for scipy."""
    w, b, a = (v.detach().double().reshape(-1) for v in (w, b, a))

    def g(t: float) -> float:
        n = c * (a * rho.fn(w * t + b)).sum()
        return float(phi.fn(n))

    return g


def split_reference(w, b, a, c, upper, phi="elu_plus_one"):
    """int_0^upper phi(N) by scipy, split at the kinks of N and where N crosses 0, so every part
    is smooth and quad reaches its 1e-14 tolerance."""
    g = network_integrand(w, b, a, c, HIDDEN["relu"], POSITIVE[phi])
    w, b, a = (v.reshape(-1).tolist() for v in (w, b, a))
    lo, hi = min(0.0, upper), max(0.0, upper)
    points = sorted({lo, hi, *(-bi / wi for wi, bi in zip(w, b, strict=True) if wi != 0)})
    points = [p for p in points if lo <= p <= hi]
    cuts = []
    for left, right in zip(points[:-1], points[1:], strict=False):
        n_left = c * sum(ai * max(wi * left + bi, 0) for wi, bi, ai in zip(w, b, a, strict=True))
        n_right = c * sum(ai * max(wi * right + bi, 0) for wi, bi, ai in zip(w, b, a, strict=True))
        cuts.append(left)
        if n_left * n_right < 0:  # N is linear on the piece: one crossing
            cuts.append(left + (right - left) * n_left / (n_left - n_right))
    cuts.append(points[-1])
    total = sum(
        integrate.quad(g, s, e, epsabs=1e-300, epsrel=1e-14, limit=200)[0]
        for s, e in zip(cuts[:-1], cuts[1:], strict=True)
    )
    return total if upper >= 0 else -total
