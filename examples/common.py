"""What the posterior-inference examples share: the guides compared, SVI training, a NUTS
reference, and the table of ELBO and posterior-moment errors.

Each example calls :func:`run_comparison` with its model; the guides are built with hidden sizes
chosen so that every flow has about the same number of parameters as ours.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyro
import torch
from pyro.distributions.transforms import iterated, neural_autoregressive, spline_autoregressive
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal, AutoNormalizingFlow
from tqdm.auto import tqdm

from pyro_overparam_flows.guides import AutoMonotoneFlow


@dataclass
class Settings:
    steps: int
    learning_rate: float
    particles: int
    width: int
    layers: int
    warmup: int
    samples: int
    draws: int
    seed: int


def parse_settings(
    description: str, *, steps: int = 2000, samples: int = 2000, draws: int = 10000
) -> Settings:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="SVI steps per guide")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=4, help="ELBO particles per step")
    parser.add_argument("--width", type=int, default=16, help="hidden width m of our flows")
    parser.add_argument("--layers", type=int, default=2, help="flow layers of every flow guide")
    parser.add_argument("--nuts-samples", type=int, default=samples)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: few steps, a short NUTS chain"
    )
    args = parser.parse_args()
    if args.quick:
        return Settings(30, args.learning_rate, 2, 4, 2, 50, 100, 500, args.seed)
    return Settings(
        args.steps,
        args.learning_rate,
        args.particles,
        args.width,
        args.layers,
        args.nuts_samples // 2,
        args.nuts_samples,
        draws,
        args.seed,
    )


def nuts_reference(
    model: Callable, args: tuple, settings: Settings, sites: list[str]
) -> dict[str, torch.Tensor]:
    """Posterior samples of ``sites`` from NUTS (run ``model`` as given, e.g. reparametrized)."""
    pyro.set_rng_seed(settings.seed)
    mcmc = MCMC(
        NUTS(model, target_accept_prob=0.9),
        num_samples=settings.samples,
        warmup_steps=settings.warmup,
        disable_progbar=not sys.stderr.isatty(),  # no bar flooding a log
    )
    mcmc.run(*args)
    samples = mcmc.get_samples()
    # Deterministic sites of a reparametrized model (the original latents) by replay.
    predictive = Predictive(model, posterior_samples=samples, return_sites=sites)
    return _flatten(predictive(*args), settings.samples)


def count_parameters(guide: Callable, model: Callable, args: tuple) -> int:
    pyro.clear_param_store()
    guide(*args)  # creates the parameters
    return sum(p.numel() for p in guide.parameters())


def _flow_guides(width: int, layers: int, hidden: int) -> dict[str, Callable]:
    """Guide factories (model -> guide) of the flows, each with ``hidden`` conditioner units."""
    return {
        "AutoMonotoneFlow (unconstrained)": lambda model: AutoMonotoneFlow(
            model, width=width, layers=layers, hidden_dims=[hidden]
        ),
        "AutoMonotoneFlow (constrained)": lambda model: AutoMonotoneFlow(
            model, family="constrained", width=width, layers=layers, hidden_dims=[hidden]
        ),
    }


def _peer(name: str, layers: int, hidden: int) -> Callable:
    if name == "AutoIAFNormal":
        return lambda model: AutoIAFNormal(model, hidden_dim=[hidden], num_transforms=layers)
    if name == "neural_autoregressive":
        flow = partial(iterated, layers, neural_autoregressive, hidden_dims=[hidden])
    else:
        flow = partial(iterated, layers, spline_autoregressive, hidden_dims=[hidden])
    return lambda model: AutoNormalizingFlow(model, flow)


def build_guides(
    model: Callable, args: tuple, latent_dim: int, settings: Settings
) -> dict[str, tuple[Callable, int]]:
    """Every guide of the table with its parameter count: ours with one hidden layer of
    ``4 * latent_dim`` conditioner units, each peer flow with the hidden size (>= latent_dim,
    as masked networks need) whose parameter count is closest to our unconstrained flow's."""
    ours = _flow_guides(settings.width, settings.layers, 4 * latent_dim)
    guides = {
        name: (factory, count_parameters(factory(model), model, args))
        for name, factory in ours.items()
    }
    target = guides["AutoMonotoneFlow (unconstrained)"][1]
    for name in ("AutoIAFNormal", "neural_autoregressive", "spline_autoregressive"):
        best = None
        for hidden in sorted({latent_dim, *range(latent_dim, 40 * latent_dim + 1, latent_dim)}):
            factory = _peer(name, settings.layers, hidden)
            count = count_parameters(factory(model), model, args)
            if best is None or abs(count - target) < abs(best[1] - target):
                best = factory, count, hidden
            if count > target:
                break
        guides[f"{name} (hidden {best[2]})"] = best[0], best[1]
    guides["AutoNormal"] = AutoNormal, count_parameters(AutoNormal(model), model, args)
    return guides


def train(model: Callable, guide: Callable, args: tuple, settings: Settings, label: str) -> float:
    """SVI with Adam whose learning rate decays to a hundredth; returns the wall time."""
    pyro.clear_param_store()
    pyro.set_rng_seed(settings.seed)
    optimizer = pyro.optim.ClippedAdam(
        {"lr": settings.learning_rate, "lrd": 0.01 ** (1 / settings.steps)}
    )
    loss = Trace_ELBO(num_particles=settings.particles, vectorize_particles=True)
    svi = SVI(model, guide, optimizer, loss)
    start = time.perf_counter()
    progress = tqdm(range(settings.steps), desc=label, leave=False, disable=None)
    for step in progress:
        value = svi.step(*args)
        if step % 100 == 0:
            progress.set_postfix(elbo=f"{-value:.2f}")
    return time.perf_counter() - start


Features = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _flatten(values: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    return {name: value.reshape(count, -1) for name, value in values.items()}


@torch.no_grad()
def evaluate(
    model: Callable,
    guide: Callable,
    args: tuple,
    reference: dict[str, torch.Tensor],
    settings: Settings,
    features: Features | None = None,
) -> dict[str, float]:
    """Final ELBO (``settings.draws`` particles) and the errors of the guide's posterior means
    (in reference standard deviations) and standard deviations (relative), RMS over every
    scalar of ``features`` of the latents (the latents themselves by default)."""
    pyro.set_rng_seed(settings.seed + 1)
    estimator = Trace_ELBO(num_particles=settings.draws, vectorize_particles=True)
    elbo = -estimator.loss(model, guide, *args)
    # Draws of the guide, vectorized as Trace_ELBO's particles are (the models have one plate).
    with pyro.plate("draws", settings.draws, dim=-2):
        draws = guide(*args)
    draws = _flatten({name: draws[name] for name in reference}, settings.draws)
    if features is not None:
        draws, reference = features(draws), features(reference)
    mean_errors, sd_errors = [], []
    for name, ref in reference.items():
        value = draws[name]
        ref_sd = ref.std(0)
        mean_errors.append((value.mean(0) - ref.mean(0)) / ref_sd)
        sd_errors.append(value.std(0) / ref_sd - 1.0)
    rms = lambda errors: float(torch.cat(errors).pow(2).mean().sqrt())  # noqa: E731
    return {"elbo": elbo, "mean_error": rms(mean_errors), "sd_error": rms(sd_errors)}


def run_comparison(
    title: str,
    model: Callable,
    args: tuple,
    reference: dict[str, torch.Tensor],
    latent_dim: int,
    settings: Settings,
    features: Features | None = None,
) -> list[dict]:
    """Train every guide on ``model`` and print one table against the NUTS reference
    (compared on ``features`` of the latents, if given)."""
    guides = build_guides(model, args, latent_dim, settings)
    rows = []
    for name, (factory, count) in guides.items():
        pyro.clear_param_store()
        guide = factory(model)
        seconds = train(model, guide, args, settings, name)
        rows.append(
            {
                "guide": name,
                "parameters": count,
                "seconds": seconds,
                **evaluate(model, guide, args, reference, settings, features),
            }
        )
    print_table(title, rows, settings)
    return rows


def print_table(title: str, rows: list[dict], settings: Settings) -> None:
    print(f"\n{title}")
    print(
        f"SVI: {settings.steps} steps, Adam lr {settings.learning_rate:g} decaying to a hundredth, "
        f"{settings.particles} particles; ELBO from {settings.draws} particles; errors against "
        f"NUTS ({settings.samples} draws), RMS over scalar latents"
    )
    header = (
        f"{'guide':<42} {'params':>7} {'ELBO':>10} {'mean err (sd)':>14} "
        f"{'sd err (rel)':>13} {'time (s)':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in sorted(rows, key=lambda r: -r["elbo"]):
        elbo = row["elbo"] if math.isfinite(row["elbo"]) else float("nan")
        print(
            f"{row['guide']:<42} {row['parameters']:>7d} {elbo:>10.3f} "
            f"{row['mean_error']:>14.3f} {row['sd_error']:>13.3f} {row['seconds']:>9.1f}"
        )
