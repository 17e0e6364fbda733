"""Shared fixtures: dtypes, devices (CUDA cases skip without a GPU), a clean Pyro state for
every test. Helper functions live in ``helpers.py``."""

from __future__ import annotations

import pyro
import pytest
import torch


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
