"""Command line: ``python -m pyro_overparam_flows demo``.

The demo fits a constrained and an unconstrained flow to the paper's 1-D mixture of Gaussians
with Pyro's SVI, prints train and test NLL next to the true distribution's, and saves a plot of
the learned densities.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyro_overparam_flows")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="fit both flows to the paper's 1-D mixture")
    run.add_argument("--output", type=Path, default=Path("demo_output"), help="plot folder")
    run.add_argument("--steps", type=int, default=600, help="SVI steps per flow")
    run.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    demo(args.output, args.steps, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
