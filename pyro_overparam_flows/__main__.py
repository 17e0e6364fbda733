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
from pathlib import Path

import pyro
import torch

from . import constrained_monotone, unconstrained_monotone
from .datasets import mixture_of_gaussians
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
        )
        if (value := getattr(args, key)) is not None
    }
    return dataclasses.replace(config, **overrides)


def sweep(config, output: Path, command: str) -> None:
    from .experiments import format_table, run_sweep, summarize, write_results

    runs = config.runs()
    print(
        f"{len(runs)} runs: {len(config.datasets)} data sets x {len(config.families)} families x "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyro_overparam_flows")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="fit both flows to the paper's 1-D mixture")
    run.add_argument("--output", type=Path, default=Path("demo_output"), help="plot folder")
    run.add_argument("--steps", type=int, default=600, help="SVI steps per flow")
    run.add_argument("--seed", type=int, default=0)
    grid = commands.add_parser(
        "sweep", help="the paper's width study: both families across widths and seeds"
    )
    grid.add_argument(
        "--quick", action="store_true", help="a small grid, 10 epochs (a few CPU minutes)"
    )
    grid.add_argument("--datasets", nargs="+", help="data sets (default: the 1-D ones)")
    grid.add_argument("--families", nargs="+", choices=["constrained", "unconstrained"])
    grid.add_argument("--widths", nargs="+", type=int, help="hidden widths m")
    grid.add_argument("--seeds", nargs="+", type=int)
    grid.add_argument("--epochs", type=int, help="override the paper's epochs (200 / 100)")
    grid.add_argument("--train-size", type=int)
    grid.add_argument("--test-size", type=int)
    grid.add_argument("--eval-every", type=int, help="score the training set every N epochs")
    grid.add_argument("--jobs", type=int, help="runs at once, one process each")
    grid.add_argument("--threads", type=int, help="torch threads per run")
    grid.add_argument("--device", help="cpu or cuda")
    grid.add_argument("--dtype", choices=["float32", "float64"])
    grid.add_argument("--output", type=Path, default=Path("sweep_output"), help="results folder")
    view = commands.add_parser(
        "kernels", help="the infinite-width view: NTK at init against its limit, laziness"
    )
    view.add_argument("--quick", action="store_true", help="fewer widths, seeds and steps")
    view.add_argument("--output", type=Path, default=Path("kernels_output"), help="results folder")
    args = parser.parse_args(argv)
    if args.command == "kernels":
        kernels(args)
    elif args.command == "demo":
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        demo(args.output, args.steps, args.seed)
    else:
        command = "python -m pyro_overparam_flows " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        try:
            config = sweep_config(args)
        except ValueError as error:
            parser.error(str(error))
        sweep(config, args.output, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
