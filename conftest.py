"""Names the docstring examples use without importing them, as in Pyro's own docstrings."""

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["torch"] = torch
    doctest_namespace["pyro"] = pyro
