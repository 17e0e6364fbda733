"""The command line demo runs end to end, prints its table and saves its plot."""

from __future__ import annotations

import pytest

from pyro_overparam_flows.__main__ import main


def test_demo_prints_nll_table_and_saves_plot(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    for row in ("true distribution", "constrained (tanh", "unconstrained (ReLU"):
        assert row in out
    assert (tmp_path / "densities.png").stat().st_size > 10_000


def test_demo_rejects_bad_steps(tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--output", str(tmp_path), "--steps", "0"])
