"""Flows train under DistributedDataParallel in Pyro's SVI: two processes (gloo over loopback)
end with the same parameters as each other and as one process on the same global batches."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)


@pytest.fixture(scope="module")
def example():
    """examples/ddp_training.py as a module; the spawned processes import it by name, from the
    sys.path they inherit."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module("ddp_training")
    finally:
        sys.path.remove(str(EXAMPLES))


FLOWS = ["unconstrained", "constrained"]


@pytest.fixture(scope="module")
def runs(example, tmp_path_factory):
    """Each flow trained by two processes and by one, on the same global batches of 64 rows
    (32 per process), with a few plain SGD steps in float64. (Adam would magnify the
    all-reduce's rounding where a gradient is near its eps, as in the first steps of the
    conditioner's zero-initialized layers, to about 1e-7.)"""
    configs = [
        example.Config(
            flow=flow,
            width=8,
            hidden_dims=(16,),
            steps=3,
            batch_size=64,
            learning_rate=1e-3,
            optimizer="sgd",
            train_size=64,
            test_size=1,
            dtype=torch.float64,
        )
        for flow in FLOWS
    ]
    distributed = example.launch(2, configs, tmp_path_factory.mktemp("ddp"))
    return {
        flow: (config, ranks, example.reference(config))
        for flow, config, ranks in zip(FLOWS, configs, distributed, strict=True)
    }


@pytest.mark.parametrize("flow", FLOWS)
def test_both_ranks_end_identical(runs, flow):
    _, (first, second), _ = runs[flow]
    assert first["state"].keys() == second["state"].keys()
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name
    assert first["rank_difference"] == 0.0
    assert first["losses"] == second["losses"]


@pytest.mark.parametrize("flow", FLOWS)
def test_two_processes_match_one_process(runs, flow):
    _, (first, _), single = runs[flow]
    for name, value in first["state"].items():
        torch.testing.assert_close(value, single["state"][name], rtol=1e-10, atol=1e-14)
    assert first["losses"] == pytest.approx(single["losses"], rel=1e-10)


@pytest.mark.parametrize("flow", FLOWS)
def test_training_moves_every_parameter(example, runs, flow):
    config, (first, _), _ = runs[flow]
    for name, parameter in example.build_flow(config).named_parameters():
        assert not torch.equal(first["state"][name], parameter.detach()), f"{name} did not move"


def test_example_runs_as_written():
    result = subprocess.run(
        [sys.executable, "ddp_training.py", "--quick"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "parameters identical on every rank: True" in lines[0]
    assert lines[-1].startswith("final NLL: train ")
