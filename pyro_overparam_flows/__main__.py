"""Command line: ``python -m pyro_overparam_flows demo``, ``... sweep`` and ``... kernels``.

The demo fits a constrained and an unconstrained flow to the paper's 1-D mixture of Gaussians
with Pyro's SVI, prints train and test NLL next to the true distribution's, and saves a plot of
the learned densities. The sweep trains both families across widths and seeds with the paper's
settings (:mod:`pyro_overparam_flows.experiments`) and writes tidy CSV/JSON files and figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from pathlib import Path

import pyro
import torch

from . import constrained_monotone, unconstrained_monotone
from .datasets import PAPER_DATASETS, mixture_of_gaussians
from .training import density, fit_density, negative_log_likelihood

FLOWS = {
    "constrained (tanh, width 64)": lambda: constrained_monotone(1, width=64),
    "unconstrained (ReLU, width 64)": lambda: unconstrained_monotone(1, width=64),
}


def demo(output: Path, steps: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pyro.set_rng_seed(seed)
    data = mixture_of_gaussians(9000, 1000, seed=seed, dtype=torch.float32)
    truth = data.distribution
    true_train = float(-truth.log_prob(data.train.double()).mean())
    true_test = float(-truth.log_prob(data.test.double()).mean())
    grid = torch.linspace(-7, 7, 701).unsqueeze(-1)
    print(
        f"1-D mixture 0.5 N(-2.5, 1) + 0.5 N(2.5, 1): {len(data.train)} train, "
        f"{len(data.test)} test samples; {steps} SVI steps per flow"
    )
    print(f"{'flow':<32}{'train NLL':>10}{'test NLL':>10}{'gap to true':>13}")
    print(f"{'true distribution':<32}{true_train:10.4f}{true_test:10.4f}{0.0:13.4f}")
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(data.test.squeeze(-1).numpy(), bins=80, density=True, color="0.85", label="test data")
    axes.plot(grid, truth.log_prob(grid.double()).exp(), "k--", label="true density")
    for name, make in FLOWS.items():
        transform = make()
        fit_density(transform, data.train, steps=steps, learning_rate=2e-2, name=name)
        train, test = (negative_log_likelihood(transform, v) for v in (data.train, data.test))
        print(f"{name:<32}{train:10.4f}{test:10.4f}{test - true_test:13.4f}")
        with torch.no_grad():
            axes.plot(grid, density(transform, grid).log_prob(grid).exp(), label=name)
    axes.set_xlabel("x")
    axes.set_ylabel("density")
    axes.legend(frameon=False)
    figure.tight_layout()
    output.mkdir(parents=True, exist_ok=True)
    path = output / "densities.png"
    figure.savefig(path, dpi=120)
    print(f"plot saved to {path}")


def sweep_config(args: argparse.Namespace):
    from .experiments import FULL, QUICK

    config = QUICK if args.quick else FULL
    overrides = {
        key: tuple(value) if isinstance(value, list) else value
        for key in (
            "datasets",
            "families",
            "widths",
            "seeds",
            "epochs",
            "train_size",
            "test_size",
            "eval_every",
            "jobs",
            "threads",
            "device",
            "dtype",
            "test_fraction",
        )
        if (value := getattr(args, key)) is not None
    }
    if args.data is not None:
        overrides["data_files"] = tuple(str(path) for path in args.data)
        overrides.setdefault("datasets", ())  # only the files, unless --datasets names some
    return dataclasses.replace(config, **overrides)


def sweep(config, output: Path, command: str) -> None:
    from .experiments import format_table, run_sweep, summarize, write_results

    runs = config.runs()
    print(
        f"{len(runs)} runs: {len(config.datasets) + len(config.data_files)} data sets x "
        f"{len(config.families)} families x "
        f"{len(config.widths)} widths x {len(config.seeds)} seeds, {config.jobs} at a time"
    )
    results = run_sweep(config, checkpoints=output / "runs")
    paths = write_results(results, config, output, command)
    print(format_table(summarize(results)))
    print(f"total training time {sum(r.seconds for r in results):.0f} s over {len(results)} runs")
    for path in paths.values():
        print(f"wrote {path}")


def _print_means(rows: list[dict], key: str, label: str) -> None:
    """The mean of ``key`` over seeds for each family and width, as a table."""
    print(f"{'family':<15}{'width':>7}{label:>20}")
    for family in sorted({r["family"] for r in rows}):
        for width in sorted({r["width"] for r in rows}):
            values = [r[key] for r in rows if (r["family"], r["width"]) == (family, width)]
            print(f"{family:<15}{width:>7}{sum(values) / len(values):>20.5f}")


def kernels(args: argparse.Namespace) -> None:
    import csv

    from .experiments import kernel_convergence, laziness, plot_kernels

    if args.quick:
        convergence = kernel_convergence((64, 256, 1024), (0, 1))
        lazy = laziness((16, 256), (0, 1), steps=30)
    else:
        convergence, lazy = kernel_convergence(), laziness()
    args.output.mkdir(parents=True, exist_ok=True)
    for name, rows in (("ntk_convergence.csv", convergence), ("laziness.csv", lazy)):
        with (args.output / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.output / name}")
    _print_means(convergence, "error", "NTK error at init")
    _print_means(lazy, "kernel_distance", "kernel distance")
    print(f"wrote {plot_kernels(convergence, lazy, args.output / 'kernels.png')}")


def _writable_folder(parser: argparse.ArgumentParser, option: str, path: Path) -> None:
    """Create ``path`` and check that a file can be written in it, before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        parser.error(f"{option} {str(path)!r} is not a folder this process can write to: {error}")


def _available_device(parser: argparse.ArgumentParser, device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError:
        parser.error(f"--device must be cpu or cuda (or cuda:N), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available on this machine; use --device cpu")


def _at_least(minimum: int):
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


QUICK_LIMITS = (
    "--quick trains 10 epochs on 2,000 samples at widths 16, 256 and 4096 with 2 seeds: it "
    "checks the pipeline and shows the unconstrained flow improving with width, but is far "
    "too short for the constrained flow's trend (the paper's 200 epochs) or for error bars; "
    "run without --quick for the study (about an hour on two cores)."
)


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m pyro_overparam_flows",
        description="Monotone one-hidden-layer normalizing flows for Pyro: a demo, the paper's "
        "width study, and its infinite-width view.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "demo",
        help="fit both flows to the paper's 1-D mixture",
        description="Fit a constrained and an unconstrained flow to 0.5 N(-2.5, 1) + "
        "0.5 N(2.5, 1) with Pyro's SVI, print train and test NLL (nats per sample) next to the "
        "true distribution's, and save a plot of the densities.",
        formatter_class=formatter,
    )
    run.add_argument("--output", type=Path, default=Path("demo_output"), help="plot folder")
    run.add_argument("--steps", type=_at_least(1), default=600, help="SVI steps per flow")
    run.add_argument("--seed", type=_at_least(0), default=0, help="random seed (data and init)")
    from .experiments import FULL, QUICK

    grid = commands.add_parser(
        "sweep",
        help="the paper's width study: both families across widths and seeds",
        description="Train both families across widths and seeds with the paper's settings "
        "and write per-epoch logs, a summary table (NLL in nats per sample, raw units) and "
        "figures. Defaults are the full study's (--quick's in brackets). " + QUICK_LIMITS,
    )

    def defaults(name: str) -> str:
        full, quick = getattr(FULL, name), getattr(QUICK, name)
        show = lambda v: " ".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
        return f" (default: {show(full)} [{show(quick)}])"

    grid.add_argument("--quick", action="store_true", help="a small grid (see above)")
    grid.add_argument(
        "--datasets",
        nargs="+",
        help="data sets, of: " + ", ".join(PAPER_DATASETS) + defaults("datasets"),
    )
    grid.add_argument(
        "--data",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="your own data sets instead of the built-in ones (add --datasets for both): "
        "files of samples, one per line, as whitespace-separated text (the paper's data "
        "files), .csv (a header line allowed) or .npy; each is split into training and "
        "held-out samples (--test-fraction) and named by its file name",
    )
    grid.add_argument(
        "--test-fraction",
        type=float,
        help="the held-out share of each --data file (default: 0.1)",
    )
    grid.add_argument(
        "--families",
        nargs="+",
        choices=["constrained", "unconstrained"],
        help="flow families" + defaults("families"),
    )
    grid.add_argument(
        "--widths", nargs="+", type=_at_least(1), help="hidden widths m" + defaults("widths")
    )
    grid.add_argument("--seeds", nargs="+", type=_at_least(0), help="run seeds" + defaults("seeds"))
    grid.add_argument(
        "--epochs",
        type=_at_least(0),
        help="epochs for every run (default: the paper's, 200 constrained and 100 "
        "unconstrained [10])",
    )
    grid.add_argument(
        "--train-size",
        type=_at_least(1),
        help="training samples per data set" + defaults("train_size"),
    )
    grid.add_argument(
        "--test-size", type=_at_least(1), help="test samples per data set" + defaults("test_size")
    )
    grid.add_argument(
        "--eval-every",
        type=_at_least(1),
        help="score the training set every N epochs" + defaults("eval_every"),
    )
    grid.add_argument(
        "--jobs", type=_at_least(1), help="runs at once, one process each" + defaults("jobs")
    )
    grid.add_argument(
        "--threads", type=_at_least(1), help="torch threads per run" + defaults("threads")
    )
    grid.add_argument("--device", help="cpu, cuda or cuda:N" + defaults("device"))
    grid.add_argument(
        "--dtype", choices=["float32", "float64"], help="floating-point type" + defaults("dtype")
    )
    grid.add_argument(
        "--output",
        type=Path,
        default=Path("sweep_output"),
        help="results folder (default: sweep_output)",
    )
    view = commands.add_parser(
        "kernels",
        help="the infinite-width view: NTK at init against its limit, laziness",
        description="Measure the empirical NTK at initialization against its infinite-width "
        "limit across widths, and how far training moves it (laziness); write CSV files, "
        "tables and a figure.",
        formatter_class=formatter,
    )
    view.add_argument(
        "--quick", action="store_true", help="fewer widths, seeds and steps (a smoke run)"
    )
    view.add_argument("--output", type=Path, default=Path("kernels_output"), help="results folder")
    args = parser.parse_args(argv)
    chosen = {"demo": run, "sweep": grid, "kernels": view}[args.command]
    config = None
    if args.command == "sweep":  # every argument is checked before any work or file
        if args.device is not None:
            _available_device(grid, args.device)
        try:
            config = sweep_config(args)
        except ValueError as error:
            grid.error(str(error))
    _writable_folder(chosen, "--output", args.output)
    if args.command == "kernels":
        kernels(args)
    elif args.command == "demo":
        demo(args.output, args.steps, args.seed)
    else:
        if args.quick:
            print(QUICK_LIMITS)
        command = "python -m pyro_overparam_flows " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        sweep(config, args.output, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
