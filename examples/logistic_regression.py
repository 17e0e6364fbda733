"""Bayesian logistic regression on scikit-learn's breast cancer data (569 x 30, shipped with
scikit-learn): flow guides against AutoNormal, with NUTS as the reference.

    w ~ Normal(0, I_30),  b ~ Normal(0, 1),  y_n ~ Bernoulli(sigmoid(x_n . w + b)),

features standardized. The posterior is close to Gaussian but correlated (the features are),
which a mean-field guide cannot express.

Run:  python examples/logistic_regression.py            (about 25 minutes on 2 CPU cores)
      python examples/logistic_regression.py --quick    (a smoke run)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from common import nuts_reference, parse_settings, run_comparison
from sklearn.datasets import load_breast_cancer


def load() -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = load_breast_cancer(return_X_y=True)
    x = torch.as_tensor(features, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    return x, torch.as_tensor(labels, dtype=torch.float32)


def logistic_regression(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    # Vectorized particles give w the shape (particles, 1, D): its 1 lines up with the data.
    logits = (w * x).sum(-1) + b
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=y)


def main() -> None:
    # 2000 evaluation draws: each holds a (569, 30) product in memory.
    settings = parse_settings(__doc__.splitlines()[0], draws=2000)
    args = load()
    reference = nuts_reference(logistic_regression, args, settings, ["w", "b"])
    run_comparison(
        "Bayesian logistic regression, breast cancer (31-D)",
        logistic_regression,
        args,
        reference,
        31,
        settings,
    )


if __name__ == "__main__":
    main()
