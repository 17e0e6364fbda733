"""Shared fixtures: dtypes, devices (CUDA cases skip without a GPU), parameter perturbation."""

from __future__ import annotations

import pyro
import pytest
import torch

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def fresh_pyro():
    """A clean param store, a fixed seed and validation on, for every test."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


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
