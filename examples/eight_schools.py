"""Eight schools, centered: flow guides against AutoNormal, with NUTS as the reference.

    mu ~ Normal(0, 5),  tau ~ HalfCauchy(5),  theta_j ~ Normal(mu, tau),
    y_j ~ Normal(theta_j, sigma_j),  j = 1..8   (Rubin 1981; Gelman et al., BDA 5.5).

The centered model has a funnel between tau and theta. The reference is NUTS on the non-centered
model (theta = mu + tau * theta_raw), the same posterior without that geometry.

Run:  python examples/eight_schools.py            (about 5 minutes on 2 CPU cores)
      python examples/eight_schools.py --quick    (a smoke run)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from common import nuts_reference, parse_settings, run_comparison
from pyro.infer.reparam import LocScaleReparam

EFFECTS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
ERRORS = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y: torch.Tensor, sigma: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def main() -> None:
    settings = parse_settings(__doc__.splitlines()[0])
    args = (EFFECTS, ERRORS)
    non_centered = pyro.poutine.reparam(eight_schools, config={"theta": LocScaleReparam(0.0)})
    reference = nuts_reference(non_centered, args, settings, ["mu", "tau", "theta"])
    print(
        f"NUTS reference: mu = {float(reference['mu'].mean()):.2f} +- "
        f"{float(reference['mu'].std()):.2f}, tau = {float(reference['tau'].mean()):.2f} +- "
        f"{float(reference['tau'].std()):.2f}"
    )
    run_comparison("Eight schools (centered)", eight_schools, args, reference, 10, settings)


if __name__ == "__main__":
    main()
