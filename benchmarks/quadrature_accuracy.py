"""Measure the quadrature error of the unconstrained map against the node count K.

Random integrand networks (w, b ~ N(0, 1), a ~ N(0, 1/m), c = 1: N is an O(1) random function,
as after training) are integrated over x in [-4, 4] by each rule with K nodes and compared with
Gauss-Legendre at 2048 nodes, in float64. Prints the worst error |F_K - F| / max(1, |F|) over
networks, widths and x for each (rule, phi, activation, K). The default K of
``UnconstrainedMonotone`` for each phi is the smallest K whose worst error is under 1e-6
(float32's working accuracy) for every smooth activation and both rules.

    python benchmarks/quadrature_accuracy.py
"""

from __future__ import annotations

import argparse
import itertools

import torch
from tqdm import tqdm

from pyro_overparam_flows.activations import HIDDEN, POSITIVE
from pyro_overparam_flows.numerics import (
    QUADRATURE_RULES,
    integrate_one_hidden_layer,
    quadrature_rule,
)

COUNTS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
SMOOTH = ("tanh", "sigmoid", "softplus", "erf")
REFERENCE_NODES = 2048
TOLERANCE = 1e-6


def integrate(x, network, phi, activation, rule):
    w, b, a = network
    with torch.no_grad():
        return integrate_one_hidden_layer(x, w, b, a, 1.0, HIDDEN[activation], POSITIVE[phi], *rule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--points", type=int, default=41)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x = torch.linspace(-4, 4, args.points, dtype=torch.float64).unsqueeze(-1)
    x = x.expand(-1, args.networks)
    networks = {}
    for width in args.widths:
        shape = (args.networks, width)
        w, b = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        networks[width] = (w, b, torch.randn(shape, dtype=torch.float64) / width**0.5)
    reference_rule = quadrature_rule("gauss-legendre", REFERENCE_NODES)
    rules = {(r, k): quadrature_rule(r, k) for r in QUADRATURE_RULES for k in COUNTS}
    worst = {}
    cases = list(itertools.product(POSITIVE, SMOOTH, args.widths))
    for phi, activation, width in tqdm(cases, desc="networks"):
        exact = integrate(x, networks[width], phi, activation, reference_rule)
        for (rule, count), nodes in rules.items():
            approx = integrate(x, networks[width], phi, activation, nodes)
            error = ((approx - exact).abs() / exact.abs().clamp(min=1.0)).max()
            key = (rule, phi, activation, count)
            worst[key] = max(worst.get(key, 0.0), float(error))
    header = f"{'rule':<16} {'phi':<13} {'activation':<10}" + "".join(f"{k:>9}" for k in COUNTS)
    print(header)
    print("-" * len(header))
    for rule, phi, activation in itertools.product(QUADRATURE_RULES, POSITIVE, SMOOTH):
        row = "".join(f"{worst[rule, phi, activation, k]:9.1e}" for k in COUNTS)
        print(f"{rule:<16} {phi:<13} {activation:<10}{row}")
    for phi in POSITIVE:
        passing = [
            k
            for k in COUNTS
            if all(e < TOLERANCE for (_, p, _, c), e in worst.items() if p == phi and c == k)
        ]
        smallest = passing[0] if passing else None
        print(f"phi={phi}: smallest K with every worst error < {TOLERANCE:g}: {smallest}")


if __name__ == "__main__":
    main()
