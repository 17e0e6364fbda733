"""The command line demo runs end to end, prints its table and saves its plot."""

from __future__ import annotations

import pytest
import torch

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


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["demo", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["demo", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    ],
)
def test_demo_arguments_are_checked_before_any_work(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*arguments, "--output", str(tmp_path / "never")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["demo", "kernels"])
def test_an_unwritable_output_folder_is_refused_before_any_work(command, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit):
        main([command, "--output", str(blocker / "results")])
    err = capsys.readouterr().err
    assert f"--output '{blocker / 'results'}' is not a folder this process can write to" in err


def test_help_shows_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for line in (
        "--steps STEPS SVI steps per flow (default: 600)",
        "--seed SEED random seed (data and init) (default: 0)",
        "--output OUTPUT plot folder (default: demo_output)",
    ):
        assert line in text


def test_progress_bars_stay_off_when_output_is_not_a_terminal(capfd):
    from pyro_overparam_flows import unconstrained_monotone
    from pyro_overparam_flows.training import fit_density

    fit_density(unconstrained_monotone(1, 4), torch.randn(32, 1), steps=3, progress=True)
    assert "it/s" not in capfd.readouterr().err  # captured: not a TTY
