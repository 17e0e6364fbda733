"""Measure the integration error of the unconstrained map: against the node count K, and at the
defaults of every activation and phi.

Random integrand networks (w, b ~ N(0, 1), a ~ N(0, 1/m), c = 1: N is an O(1) random function,
as after training) are integrated over x in [-4, 4], in float64, and the worst error
|F - F_ref| / max(1, |F_ref|) over networks, widths and x is printed:

* for the smooth activations, by each rule with K nodes against Gauss-Legendre at 2048 nodes.
  The default K of ``UnconstrainedMonotone`` for each phi is the smallest K whose worst error is
  under 1e-6 (float32's working accuracy) for every smooth activation and both rules;
* for every (activation, phi), by ``UnconstrainedMonotone``'s own integral at its defaults
  (exact for ReLU, the default quadrature otherwise) against scipy's adaptive quadrature at
  1e-12, split at the kinks of a ReLU network.

    python benchmarks/quadrature_accuracy.py
"""

from __future__ import annotations

import argparse
import itertools

import torch
from scipy import integrate as scipy_integrate
from tqdm import tqdm

from pyro_overparam_flows import UnconstrainedMonotone
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


def scipy_reference(x: float, w, b, a, phi: str, activation: str) -> float:
    """int_0^x phi(N), adaptive, split at the kinks of the network when it has any."""
    rho, positive = HIDDEN[activation], POSITIVE[phi]

    def integrand(t: float) -> float:
        return float(positive.fn((a * rho.fn(w * t + b)).sum()))

    kinks = []
    if activation == "relu":
        kinks = [k for k in (-b / w).tolist() if min(0.0, x) < k < max(0.0, x)]
    value, _ = scipy_integrate.quad(
        integrand, 0.0, x, points=kinks or None, epsabs=1e-13, epsrel=1e-12, limit=500
    )
    return value


def defaults_table(networks: dict, points: torch.Tensor) -> None:
    """The worst error of the transform's own integral at its defaults, every activation x phi."""
    rows = []
    cases = list(itertools.product(HIDDEN, POSITIVE))
    for activation, phi in tqdm(cases, desc="defaults", disable=None):
        worst, method = 0.0, ""
        for width, (w, b, a) in networks.items():
            transform = UnconstrainedMonotone(1, width, activation=activation, phi=phi, tail=False)
            transform = transform.double()
            if transform.integration == "exact":
                method = "exact"
            else:
                method = f"{transform.integration}, K = {transform.quadrature_nodes.numel()}"
            for row in range(w.shape[0]):
                with torch.no_grad():
                    transform.hidden_weight.copy_(w[row : row + 1])
                    transform.hidden_bias.copy_(b[row : row + 1])
                    transform.output_weight.copy_(a[row : row + 1])
                    ours = transform(points).squeeze(-1)
                for x, value in zip(points.squeeze(-1).tolist(), ours.tolist(), strict=True):
                    exact = scipy_reference(x, w[row], b[row], a[row], phi, activation)
                    worst = max(worst, abs(value - exact) / max(1.0, abs(exact)))
        rows.append(f"{activation:<10} {phi:<13} {method:<30}{worst:12.1e}")
    print(
        f"\n{'activation':<10} {'phi':<13} {'integration at the defaults':<30}{'worst error':>12}"
    )
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--points", type=int, default=41)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--defaults-networks", type=int, default=4, help="networks per width at the defaults"
    )
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
    for phi, activation, width in tqdm(cases, desc="networks", disable=None):
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
    some = {m: tuple(v[: args.defaults_networks] for v in net) for m, net in networks.items()}
    defaults_table(some, torch.linspace(-4, 4, 9, dtype=torch.float64).unsqueeze(-1))


if __name__ == "__main__":
    main()
