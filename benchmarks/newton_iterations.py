"""Count the Newton iterations the inverse needs, to set the solver's fixed budget.

For each flow configuration, random trained-looking networks (initial parameters plus N(0, 0.5^2)
noise) are inverted at targets y = f(x) for x log-spaced over +-[1e-4, 1e4] and 0, in float32 and
float64. The solver runs with a budget of 500 and stops when every element has converged; the
table shows, over networks, the median and the largest number of iterations a batch took, the
worst residual |f(x') - y| / max(1, |y|) of the solution x' and the worst round-trip error
|x' - x| / max(1, |x|). The last is large only where f is flat to working precision (a ReLU
network whose integrand decays to 0, an ill-conditioned inverse): the residual shows the solve
itself is accurate there. "no root" counts networks where the inverse raised because some
y = f(x) was not found: a quadrature map whose integrand decays far out is not monotone to working
precision once |x| / K no longer resolves the network (see the README's accuracy notes).

    python benchmarks/newton_iterations.py
"""

from __future__ import annotations

import argparse
import itertools

import torch
from tqdm import tqdm

from pyro_overparam_flows import ConstrainedMonotone, UnconstrainedMonotone
from pyro_overparam_flows.numerics import root_finding
from pyro_overparam_flows.transforms import constrained, unconstrained

MEASURING_BUDGET = 500
CONFIGURATIONS = {
    "constrained tanh, tail": lambda m: ConstrainedMonotone(1, m),
    "constrained sigmoid, tail": lambda m: ConstrainedMonotone(1, m, activation="sigmoid"),
    "constrained tanh, no tail": lambda m: ConstrainedMonotone(1, m, tail=False),
    "unconstrained relu, exact": lambda m: UnconstrainedMonotone(1, m),
    "unconstrained tanh, gauss-legendre": lambda m: UnconstrainedMonotone(1, m, activation="tanh"),
    "unconstrained softplus, softplus phi": lambda m: UnconstrainedMonotone(
        1, m, activation="softplus", phi="softplus"
    ),
}


class CountingSolver:
    """Stands in for ``solve_increasing`` and records how many iterations each call used."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __call__(self, fn, y, lower, upper, initial=None, **kwargs):
        calls = 0

        def counted(x):
            nonlocal calls
            calls += 1
            return fn(x)

        kwargs["max_iterations"] = MEASURING_BUDGET
        result = root_finding.solve_increasing(counted, y, lower, upper, initial, **kwargs)
        self.counts.append(calls)
        return result


def perturb_(transform: torch.nn.Module, scale: float) -> None:
    with torch.no_grad():
        for parameter in transform.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


def targets(dtype: torch.dtype) -> torch.Tensor:
    magnitudes = torch.logspace(-4, 4, 33, dtype=dtype)
    return torch.cat([-magnitudes.flip(0), magnitudes.new_zeros(1), magnitudes]).unsqueeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    solver = CountingSolver()
    constrained.solve_increasing = unconstrained.solve_increasing = solver
    rows = []
    cases = list(itertools.product(CONFIGURATIONS, (torch.float32, torch.float64), args.widths))
    for name, dtype, width in tqdm(cases, desc="configurations", disable=None):
        solver.counts.clear()
        worst_residual = worst_error = 0.0
        failures = 0
        for _ in range(args.networks):
            transform = CONFIGURATIONS[name](width).to(dtype)
            perturb_(transform, 0.5)
            x = targets(dtype)
            with torch.no_grad():
                y = transform(x).clone()  # a new tensor, so Pyro's cache cannot answer
                if "no tail" in name:  # the bounded model only inverts inside its range
                    keep = (y > y.min()) & (y < y.max())
                    x, y = x[keep].unsqueeze(-1), y[keep].unsqueeze(-1)
                try:
                    solution = transform.inv(y)
                except ValueError:
                    failures += 1
                    continue
                residual = (transform(solution.clone()) - y).abs() / y.abs().clamp(min=1.0)
                error = (solution - x).abs() / x.abs().clamp(min=1.0)
            worst_residual = max(worst_residual, float(residual.max()))
            worst_error = max(worst_error, float(error.max()))
        counts = torch.tensor(solver.counts, dtype=torch.float64)
        dtype_name = str(dtype).removeprefix("torch.")
        rows.append((name, dtype_name, width, counts, worst_residual, worst_error, failures))
    print(
        f"{'configuration':<38}{'dtype':<9}{'width':>6}{'median':>8}{'max':>6}"
        f"{'residual':>10}{'x error':>10}{'no root':>9}"
    )
    for name, dtype, width, counts, residual, error, failures in rows:
        median, largest = int(counts.median()), int(counts.max())
        print(
            f"{name:<38}{dtype:<9}{width:>6}{median:>8}{largest:>6}{residual:10.1e}{error:10.1e}"
            f"{failures:>9}"
        )
    overall = max(int(r[3].max()) for r in rows)
    print(f"most iterations any batch needed: {overall}")


if __name__ == "__main__":
    main()
