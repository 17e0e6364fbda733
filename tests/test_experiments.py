"""The width study: the paper's training runs, their density models and logs, the sweep's files
and figures, end to end through the command line."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from pyro_overparam_flows.__main__ import main
from pyro_overparam_flows.experiments import (
    LAYERS,
    PAPER_SETTINGS,
    DensityModel,
    SweepConfig,
    TrainingSetting,
    make_flow,
    prepare_data,
    run_sweep,
    summarize,
    train_run,
)

TINY = dict(train_size=96, test_size=48, progress=False)


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_paper_settings(family):
    setting = PAPER_SETTINGS[family]
    assert setting.batch_size == 32
    flow = make_flow(family, 1, 16, setting)
    if family == "constrained":
        assert (setting.learning_rate, setting.epochs) == (5e-4, 200)
        assert flow.positivity.projected and flow.tail is None
        assert flow.parametrization == "standard-normal" and setting.base == "normal"
        assert setting.preprocessing == "zscore"
    else:
        assert (setting.learning_rate, setting.epochs) == (5e-3, 100)
        assert flow.parametrization == "gaussian-sqrt(m)" and setting.base == "exponential"
        assert not any(n == "output_weight" for n, _ in flow.named_parameters())
        assert setting.preprocessing == "ball"
    two = make_flow(family, 2, 16, setting)
    assert two.autoregressive and two.scale is False  # the paper's multi-dimensional model


def test_exponential_model_is_a_density():
    """Change of variables: the model's density integrates over [x0, X] to 1 - exp(-z(X))."""
    data, start, _, _ = prepare_data("mixture_of_betas", PAPER_SETTINGS["unconstrained"])
    torch.manual_seed(0)
    transform = make_flow("unconstrained", 1, 32, PAPER_SETTINGS["unconstrained"]).double()
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model = DensityModel(transform, "exponential", start)
    grid = torch.linspace(float(start), 0.5, 20001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        density = torch.exp(-model(grid))
    mass = torch.trapezoid(density, grid.squeeze(-1))
    with torch.no_grad():
        z_end = transform(grid[-1:]) - transform(grid[:1])
    assert float(mass) == pytest.approx(float(1 - torch.exp(-z_end)), abs=1e-7)
    base, log_det = model.terms(data.train.double())
    assert (base >= 0).all() and torch.isfinite(log_det).all()


def test_exponential_start_of_autoregressive_flows():
    """z_d = f_d(x) - f_d(x with x_d set to x0_d), against a loop over coordinates."""
    torch.manual_seed(1)
    setting = PAPER_SETTINGS["unconstrained"]
    transform = make_flow("unconstrained", 3, 8, setting).double()
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(0.3 * torch.randn_like(p))
    start = torch.tensor([-0.5, -0.4, -0.6], dtype=torch.float64)
    x = start + torch.rand(5, 3, dtype=torch.float64)
    model = DensityModel(transform, "exponential", start)
    base, _ = model.terms(x)
    expected = torch.zeros(5, dtype=torch.float64)
    for d in range(3):
        moved = x.clone()
        moved[:, d] = start[d]
        expected += transform(x)[:, d] - transform(moved)[:, d]
    torch.testing.assert_close(base, expected)


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_run_logs_consistent_terms_and_distances(family):
    result = train_run("mixture_of_gaussians", family, 8, seed=3, epochs=2, **TINY)
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    first, last = result.history[0], result.history[-1]
    assert math.isnan(first["running_nll"]) and math.isfinite(last["running_nll"])
    assert last["train_nll"] < first["train_nll"]
    assert all(
        first[f"distance_{layer}"] in (0.0,) or math.isnan(first[f"distance_{layer}"])
        for layer in LAYERS
    )
    assert last["distance_hidden_weight"] > 0 and last["distance_hidden_bias"] > 0
    assert math.isnan(last["distance_conditioner"])
    if family == "unconstrained":  # the paper's preset does not train the output layer
        assert math.isnan(last["distance_output_weight"])
    else:
        assert last["distance_output_weight"] > 0
    # Raw units: log p_raw(x) = log p(T x) + log|det T| for the preprocessing's affine T.
    data, _, true_train, _ = prepare_data(
        "mixture_of_gaussians", result.setting, train_size=96, test_size=48
    )
    log_det = float(data.transform.scale.log().sum())
    assert last["test_nll_raw"] == pytest.approx(last["test_nll"] - log_det)
    assert result.true_train_nll == pytest.approx(true_train)


def _independent_nll(family: str, width: int, seed: int, x: torch.Tensor, start) -> tuple:
    """Epoch 0's base and log-det terms from the initial weights, with numpy and scipy: the
    network written out, the unconstrained integral by adaptive quadrature."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = make_flow(family, 1, width, PAPER_SETTINGS[family])
    net = flow.network()
    w, b, a = (
        getattr(net, name).detach().double().numpy()[0]
        for name in ("hidden_weight", "hidden_bias", "output_weight")
    )
    c, offset = net.multiplier, float(net.offset.detach())
    points = x.squeeze(-1).double().numpy()
    if family == "constrained":  # z = c sum a tanh(w x + b) + beta, normal base
        u = np.outer(points, w) + b
        z = c * np.tanh(u) @ a + offset
        slope = c * (1 - np.tanh(u) ** 2) @ (a * w)
        return np.mean(0.5 * z**2 + 0.5 * np.log(2 * np.pi)), np.mean(-np.log(slope))
    elu1 = lambda v: np.where(v > 0, v + 1, np.exp(np.minimum(v, 0)))  # noqa: E731
    network = lambda t: c * np.maximum(w * t + b, 0) @ a  # noqa: E731
    kinks = sorted(-b / w)
    base = [
        integrate.quad(
            lambda t: elu1(network(t)), float(start), p, points=kinks, limit=500, epsabs=1e-12
        )[0]
        for p in points
    ]
    return np.mean(base), np.mean([-np.log(elu1(network(p))) for p in points])


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_initial_terms_match_an_independent_computation(family):
    result = train_run("mixture_of_betas", family, 12, seed=4, epochs=0, **TINY)
    data, start, _, _ = prepare_data(
        "mixture_of_betas", PAPER_SETTINGS[family], train_size=96, test_size=48
    )
    base, log_det = _independent_nll(family, 12, 4, data.test.float(), start)
    first = result.history[0]
    assert first["test_base"] == pytest.approx(base, rel=1e-5)
    assert first["test_logdet"] == pytest.approx(log_det, rel=1e-5, abs=1e-6)


def test_raw_units_count_every_dimension():
    """NLL in raw units against the density pushed through the preprocessing by autograd."""
    result = train_run("checkerboard", "unconstrained", 8, seed=0, epochs=1, **TINY)
    data, _, _, _ = prepare_data(
        "checkerboard", PAPER_SETTINGS["unconstrained"], train_size=96, test_size=48
    )
    jacobian = torch.autograd.functional.jacobian(data.transform, data.test[0])
    log_det = float(torch.linalg.det(jacobian).abs().log())
    last = result.history[-1]
    assert last["test_nll_raw"] == pytest.approx(last["test_nll"] - log_det)


def test_exponential_model_has_no_mass_below_its_start():
    transform = make_flow("unconstrained", 1, 8, PAPER_SETTINGS["unconstrained"])
    model = DensityModel(transform, "exponential", torch.tensor([0.0]))
    nll = model(torch.tensor([[-0.3], [0.0], [0.2]]))
    assert nll[0] == math.inf and torch.isfinite(nll[1:]).all()


def _values(result):
    return [
        [None if isinstance(v, float) and math.isnan(v) else v for v in r.values()]
        for r in result.history
    ]


def test_runs_repeat_from_their_seed_and_leave_the_global_rng_alone():
    setting = TrainingSetting("ntk", 0.5, 2, options={"tail": False, "positivity": "projected"})
    state = torch.random.get_rng_state()
    one = train_run("mixture_of_betas", "constrained", 8, seed=0, setting=setting, **TINY)
    assert torch.equal(state, torch.random.get_rng_state())
    two = train_run("mixture_of_betas", "constrained", 8, seed=0, setting=setting, **TINY)
    assert _values(one) == _values(two)
    three = train_run("mixture_of_betas", "constrained", 8, seed=1, setting=setting, **TINY)
    assert three.history[-1]["test_nll"] != one.history[-1]["test_nll"]


@pytest.mark.parametrize("family", ["constrained", "unconstrained"])
def test_multidimensional_runs_use_autoregressive_flows(family):
    result = train_run("checkerboard", family, 8, seed=0, epochs=1, **TINY)
    last = result.history[-1]
    assert math.isfinite(last["test_nll"]) and last["distance_conditioner"] > 0


def test_sweep_api_summarizes_over_seeds():
    config = SweepConfig(
        datasets=("mixture_of_gaussians",),
        widths=(4, 16),
        seeds=(0, 1),
        epochs=1,
        train_size=64,
        test_size=32,
    )
    results = run_sweep(config, progress=False)
    assert len(results) == 8
    summary = summarize(results)
    assert [(r["family"], r["width"]) for r in summary] == [
        ("constrained", 4),
        ("constrained", 16),
        ("unconstrained", 4),
        ("unconstrained", 16),
    ]
    row = summary[0]
    finals = [
        r.history[-1]["test_nll"] for r in results if r.family == "constrained" and r.width == 4
    ]
    assert row["seeds"] == 2
    assert row["test_nll_mean"] == pytest.approx(sum(finals) / 2)
    assert row["test_nll_sd"] == pytest.approx(abs(finals[0] - finals[1]) / math.sqrt(2))


def test_sweep_in_processes_checkpoints_and_resumes(tmp_path):
    config = SweepConfig(
        datasets=("mixture_of_gaussians",),
        families=("unconstrained",),
        widths=(4,),
        seeds=(0, 1),
        epochs=1,
        train_size=64,
        test_size=32,
        jobs=2,
    )
    folder = tmp_path / "runs"
    parallel = run_sweep(config, progress=False, checkpoints=folder)
    serial = run_sweep(SweepConfig(**{**config.__dict__, "jobs": 1}), progress=False)
    assert [_values(r) for r in parallel] == [_values(r) for r in serial]
    saved = sorted(folder.glob("*.json"))
    assert len(saved) == 2
    json.loads(saved[0].read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    # A file cut short is trained again; a saved one is read back, not retrained.
    saved[0].write_text(saved[0].read_text()[:50])
    before = saved[1].stat().st_mtime_ns
    again = run_sweep(config, progress=False, checkpoints=folder)
    assert [_values(r) for r in again] == [_values(r) for r in parallel]
    assert saved[1].stat().st_mtime_ns == before and json.loads(saved[0].read_text())
    # Another configuration does not reuse them.
    other = SweepConfig(**{**config.__dict__, "epochs": 2, "jobs": 1})
    assert len(run_sweep(other, progress=False, checkpoints=folder)[0].history) == 3


def test_settings_are_immutable():
    setting = PAPER_SETTINGS["constrained"]
    assert hash(setting) and dict(setting.options) == {"tail": False, "positivity": "projected"}
    assert TrainingSetting("ntk", 0.1, 1, options={"tail": True}).options == (("tail", True),)


def test_quick_sweep_end_to_end_writes_files_and_figures(tmp_path, capsys):
    output = tmp_path / "sweep"
    main(
        [
            "sweep",
            "--quick",
            "--widths",
            "4",
            "32",
            "--seeds",
            "0",
            "1",
            "--epochs",
            "2",
            "--train-size",
            "128",
            "--test-size",
            "64",
            "--output",
            str(output),
        ]
    )
    printed = capsys.readouterr().out
    assert "16 runs" in printed and "mixture_of_betas" in printed
    with (output / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 16 * 3
    assert {
        "dataset",
        "family",
        "width",
        "seed",
        "epoch",
        "train_nll",
        "train_base",
        "train_logdet",
        "test_nll",
        "test_nll_raw",
        "distance_hidden_weight",
        "relative_distance_hidden_bias",
    } <= set(history[0])
    with (output / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 8 and all(math.isfinite(float(r["test_nll_raw_mean"])) for r in summary)
    table = (output / "table.txt").read_text()
    assert "train NLL" in table and len(table.splitlines()) == 10
    assert table.startswith("Final NLL in nats per sample, in the data's own (raw) units")
    document = json.loads((output / "sweep.json").read_text())
    assert document["command"].startswith("python -m pyro_overparam_flows sweep --quick")
    assert len(document["runs"]) == 16
    for name in ("nll_vs_width.png", "distance_vs_width.png", "learning_curves.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_gets_clear_errors(capsys):
    with pytest.raises(ValueError, match="unknown dataset 'moons'"):
        SweepConfig(datasets=("moons",))
    with pytest.raises(ValueError, match="unknown family"):
        SweepConfig(families=("both",))
    with pytest.raises(ValueError, match="widths must be integers >= 1"):
        SweepConfig(widths=(0,))
    with pytest.raises(ValueError, match="non-empty"):
        SweepConfig(seeds=())
    with pytest.raises(ValueError, match="unknown family"):
        train_run("mixture_of_gaussians", "mixed", 4, 0, **TINY)
    with pytest.raises(ValueError, match="unknown dataset"):
        train_run("moons", "constrained", 4, 0, **TINY)
    with pytest.raises(ValueError, match="eval_every"):
        train_run("mixture_of_gaussians", "constrained", 4, 0, eval_every=0, **TINY)
    with pytest.raises(ValueError, match="unknown base"):
        DensityModel(make_flow("constrained", 1, 4, PAPER_SETTINGS["constrained"]), "laplace")
    with pytest.raises(ValueError, match="start is needed"):
        DensityModel(
            make_flow("unconstrained", 1, 4, PAPER_SETTINGS["unconstrained"]), "exponential"
        )
    with pytest.raises(SystemExit):
        main(["sweep", "--widths", "0", "--output", "unused"])
    assert "argument --widths: must be >= 1, got 0" in capsys.readouterr().err
    for name in ("train_size", "test_size", "eval_every"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            SweepConfig(**{name: 0})
    with pytest.raises(ValueError, match="seeds must be integers >= 0"):
        SweepConfig(seeds=(-1,))
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda"):
        SweepConfig(device="tpu")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--train-size", "0"], "argument --train-size: must be >= 1, got 0"),
        (["--test-size", "-3"], "argument --test-size: must be >= 1, got -3"),
        (["--seeds", "-1"], "argument --seeds: must be >= 0, got -1"),
        (["--jobs", "two"], "argument --jobs: expected an integer, got 'two'"),
        (["--device", "tpu"], "--device must be cpu or cuda (or cuda:N), got 'tpu'"),
        (["--datasets", "moons"], "unknown dataset 'moons'"),
    ],
)
def test_sweep_arguments_are_checked_before_any_work(arguments, message, tmp_path, capsys):
    output = tmp_path / "never"
    with pytest.raises(SystemExit):
        main(["sweep", *arguments, "--output", str(output)])
    assert message in capsys.readouterr().err
    assert not output.exists()  # nothing written, nothing trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_sweep_on_cuda_without_cuda_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--device", "cuda", "--output", str(tmp_path)])
    assert "CUDA is not available on this machine; use --device cpu" in capsys.readouterr().err


def test_sweep_help_shows_defaults_and_what_quick_cannot_show(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "hidden widths m (default: 8 32 128 512 2048 [16 256 4096])" in text
    assert "too short for the constrained flow's trend" in text
    assert "nats per sample, raw units" in text
