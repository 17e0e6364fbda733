"""Maximum-likelihood fitting of a flow with Pyro: ``pyro.module``, ``SVI`` and Pyro's optimizers.

Density estimation scores data through the forward map: the model is
:math:`x \\sim` ``TransformedDistribution(Normal(0, I), [transform.inv])``, whose log-density is
:math:`\\log N(f(x)) + \\log|\\det J_f(x)|` and needs no inverse. With no latent variables and an
empty guide, ``Trace_ELBO`` is exactly the negative log-likelihood of the (sub-sampled) data.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from tqdm.auto import tqdm

from .transforms import MonotoneTransformModule
from .transforms.base import FamilyHost

__all__ = ["density", "fit_density", "negative_log_likelihood"]


def density(transform: MonotoneTransformModule, like: torch.Tensor) -> dist.Distribution:
    r"""The flow's distribution: a standard normal base pushed through ``transform.inv``,
    with log-density :math:`\log p(x) = \log \mathcal{N}(f(x); 0, I) + \log|\det J_f(x)|`.

    :param transform: the flow, mapping data to the base space.
    :param torch.Tensor like: a tensor with the data's dtype and device.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> p = density(unconstrained_monotone(2, width=4), torch.zeros(1))  # the identity at first
    >>> [round(v, 4) for v in p.log_prob(torch.zeros(3, 2)).tolist()]  # -log(2 pi)
    [-1.8379, -1.8379, -1.8379]
    """
    dim = transform.input_dim
    base = dist.Normal(like.new_zeros(dim), like.new_ones(dim)).to_event(1)
    return dist.TransformedDistribution(base, [transform.inv])


def negative_log_likelihood(transform: MonotoneTransformModule, data: torch.Tensor) -> float:
    r"""Mean negative log-likelihood of ``data`` (shape ``(n, input_dim)``) in nats,
    :math:`-\frac1n \sum_i \log p(x_i)` under :func:`density`, without gradient.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> round(negative_log_likelihood(unconstrained_monotone(1, width=4), torch.zeros(8, 1)), 4)
    0.9189
    """
    with torch.no_grad():
        return float(-density(transform, data).log_prob(data).mean())


def fit_density(
    transform: MonotoneTransformModule,
    data: torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    decay: float = 0.1,
    name: str = "flow",
    progress: bool = True,
) -> list[float]:
    """Fit ``transform`` to ``data`` by maximum likelihood with Pyro's SVI.

    Each step draws a mini-batch through ``pyro.plate`` sub-sampling (so the loss is scaled to
    the whole data set) and takes a step of Pyro's ``ClippedAdam``, whose learning rate decays
    geometrically from ``learning_rate`` to ``decay * learning_rate`` over the run. Every
    constrained flow with ``positivity="projected"`` in ``transform`` (element-wise,
    autoregressive or coupling, alone or composed) is projected after every step, as projected
    SGD.

    :param transform: the flow; registered with ``pyro.module(name, transform)``.
    :param torch.Tensor data: shape ``(n, input_dim)``.
    :param int steps: optimizer steps.
    :param int batch_size: mini-batch size (at most n).
    :param float learning_rate: the initial learning rate.
    :param float decay: the final learning rate as a fraction of the initial one.
    :param str name: the name under which Pyro's param store holds the parameters.
    :param bool progress: show a tqdm progress bar.
    :returns: the per-sample training loss (mean NLL of the mini-batch) of each step.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> losses = fit_density(unconstrained_monotone(1, 8), torch.randn(64, 1), steps=3,
    ...                      progress=False)
    >>> len(losses)
    3
    """
    if data.dim() != 2 or data.shape[-1] != transform.input_dim:
        raise ValueError(
            f"data must have shape (n, {transform.input_dim}), got {tuple(data.shape)}"
        )
    size = min(batch_size, len(data))

    def model(data: torch.Tensor) -> None:
        pyro.module(name, transform)
        with pyro.plate("data", len(data), subsample_size=size) as index:
            pyro.sample("x", density(transform, data), obs=data[index])

    def guide(data: torch.Tensor) -> None:
        pass

    optimizer = ClippedAdam({"lr": learning_rate, "lrd": decay ** (1.0 / steps)})
    svi = SVI(model, guide, optimizer, Trace_ELBO())
    losses = []
    bar = tqdm(range(steps), desc=name, disable=None if progress else True, leave=False)
    for _ in bar:
        loss = svi.step(data) / len(data)
        for module in transform.modules():  # projected SGD: every projected constrained flow
            if isinstance(module, FamilyHost):
                module.project_()
        losses.append(loss)
        bar.set_postfix(nll=f"{loss:.4f}", refresh=False)
    return losses
