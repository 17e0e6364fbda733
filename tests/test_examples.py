"""The example scripts run as written (their --quick smoke settings) and print their tables."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GUIDES = [
    "AutoMonotoneFlow (unconstrained)",
    "AutoMonotoneFlow (constrained)",
    "AutoIAFNormal",
    "neural_autoregressive",
    "spline_autoregressive",
    "AutoNormal",
]


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, script, "--quick", *args],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("script", ["funnel.py", "eight_schools.py", "logistic_regression.py"])
def test_posterior_examples_print_their_table(script):
    pytest.importorskip("sklearn")
    output = run(script)
    table = output[output.index("guide ") :]
    for guide in GUIDES:
        line = next(line for line in table.splitlines() if line.startswith(guide))
        elbo = float(line[42:].split()[1])
        assert math.isfinite(elbo), line


def test_amortized_example_prints_and_plots(tmp_path):
    output = run("amortized_inference.py", "--output", str(tmp_path))
    assert "Gaussian encoder" in output and "monotone flow encoder" in output
    assert (tmp_path / "amortized_posteriors.png").stat().st_size > 10_000
