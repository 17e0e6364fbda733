"""The width study on a user's own data: samples read from files (the paper's text format,
CSV, NumPy), split into train and held-out sets, trained with train_run and the sweep, from
Python and from the command line, with the NLL in the data's own units."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from pyro_overparam_flows.__main__ import main
from pyro_overparam_flows.datasets import load_samples, mixture_of_gaussians, split_samples
from pyro_overparam_flows.experiments import SweepConfig, run_sweep, train_run

SAMPLES = torch.tensor([[0.5, 1.0], [-0.25, 2.0], [1.5, -1.0], [0.0, 0.125]], dtype=torch.float64)


@pytest.mark.parametrize("suffix", [".txt", ".dat", ".csv", ".npy"])
def test_samples_are_read_from_every_format(suffix, tmp_path):
    path = tmp_path / f"samples{suffix}"
    if suffix == ".npy":
        np.save(path, SAMPLES.numpy())
    elif suffix == ".csv":
        rows = "\n".join(",".join(f"{v!r}" for v in row.tolist()) for row in SAMPLES)
        path.write_text("x,y\n" + rows + "\n")  # a header line
    else:
        rows = "\n".join("  ".join(f"{v!r}" for v in row.tolist()) for row in SAMPLES)
        path.write_text(rows + "\n")
    torch.testing.assert_close(load_samples(path), SAMPLES, rtol=0, atol=0)


def test_one_column_files_give_one_dimensional_samples(tmp_path):
    path = tmp_path / "column.txt"
    path.write_text("0.5\n-1.5\n2.0\n")
    assert load_samples(path).shape == (3, 1)
    np.save(tmp_path / "flat.npy", np.array([0.5, -1.5, 2.0]))
    assert load_samples(tmp_path / "flat.npy").shape == (3, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        ("0.5 1.0\nnan 2.0\n", r"NaN or infinite values \(first in sample 1\)"),
        ("0.5 1.0\n", r"at least 2 samples"),
        ("0.5 1.0\n2.0\n", r"could not read samples from .*\.txt: whitespace-separated"),
    ],
)
def test_bad_files_get_clear_errors(content, message, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_samples(path)
    with pytest.raises(ValueError, match=r"data file '.*missing\.txt' does not exist"):
        load_samples(tmp_path / "missing.txt")


def test_split_holds_out_a_fraction_of_every_sample_once():
    samples = torch.arange(40.0).reshape(20, 2)
    data = split_samples(samples, test_fraction=0.25, seed=3)
    assert data.train.shape == (15, 2) and data.test.shape == (5, 2) and data.distribution is None
    together = torch.cat([data.train, data.test])
    assert torch.equal(together[together[:, 0].argsort()], samples)
    assert torch.equal(split_samples(samples, 0.25, seed=3).test, data.test)
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\)"):
        split_samples(samples, test_fraction=1.0)


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_train_run_takes_samples_and_reports_nll_in_their_units(family):
    samples = mixture_of_gaussians(400, 1, seed=1).train
    options = {"epochs": 2, "progress": False, "test_fraction": 0.2}
    run = train_run(samples, family, 8, seed=0, **options)
    scaled = train_run(10.0 * samples, family, 8, seed=0, name="scaled", **options)
    assert run.dataset == "data" and scaled.dataset == "scaled"
    assert math.isnan(run.true_test_nll)
    final, final_scaled = run.history[-1], scaled.history[-1]
    assert math.isfinite(final["test_nll_raw"])
    # Both preprocessings remove the scale: the fitted model is the same, and the density of
    # 10 x is the density of x divided by 10.
    assert final_scaled["test_nll_raw"] == pytest.approx(final["test_nll_raw"] + math.log(10.0))


def test_sweep_runs_data_files_beside_built_in_data(tmp_path):
    path = tmp_path / "mine.npy"
    np.save(path, mixture_of_gaussians(200, 1, seed=2).train.numpy())
    config = SweepConfig(
        datasets=("mixture_of_betas",),
        data_files=(str(path),),
        families=("unconstrained",),
        widths=(4,),
        seeds=(0,),
        epochs=1,
        train_size=64,
        test_size=32,
    )
    results = run_sweep(config, progress=False)
    assert sorted(r.dataset for r in results) == ["mine", "mixture_of_betas"]
    with pytest.raises(ValueError, match="data file 'nowhere.txt' does not exist"):
        SweepConfig(datasets=(), data_files=("nowhere.txt",))


def test_sweep_command_on_a_text_file_in_the_papers_format(tmp_path, capsys):
    samples = mixture_of_gaussians(300, 1, seed=4).train.numpy()
    path = tmp_path / "two_moons_like.txt"
    np.savetxt(path, np.concatenate([samples, 0.5 * samples**2], 1))  # 2-D, whitespace
    output = tmp_path / "out"
    main(
        [
            "sweep",
            "--data",
            str(path),
            "--widths",
            "4",
            "8",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--test-fraction",
            "0.2",
            "--output",
            str(output),
        ]
    )
    printed = capsys.readouterr().out
    assert "4 runs: 1 data sets x 2 families x 2 widths x 1 seeds" in printed
    with (output / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert {row["dataset"] for row in summary} == {"two_moons_like"}
    assert all(math.isfinite(float(row["test_nll_raw_mean"])) for row in summary)
    assert all(row["true_test_nll"] == "nan" for row in summary)
    assert (output / "nll_vs_width.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_command_refuses_a_missing_data_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--data", str(tmp_path / "absent.txt"), "--output", str(tmp_path)])
    assert "data file" in capsys.readouterr().err
