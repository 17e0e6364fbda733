r"""Variational guides built on the monotone flows.

Every transform of this package works inside Pyro's own
:class:`~pyro.infer.autoguide.AutoNormalizingFlow`, one line each::

    from functools import partial
    from pyro.infer.autoguide import AutoNormalizingFlow
    from pyro_overparam_flows import (
        constrained_monotone_autoregressive,
        unconstrained_monotone,
        unconstrained_monotone_autoregressive,
        unconstrained_monotone_coupling,
    )

    guide = AutoNormalizingFlow(model, partial(unconstrained_monotone_autoregressive, width=32))
    guide = AutoNormalizingFlow(model, partial(constrained_monotone_autoregressive, width=32))
    guide = AutoNormalizingFlow(model, partial(unconstrained_monotone_coupling, width=32))
    guide = AutoNormalizingFlow(model, partial(unconstrained_monotone, width=32))  # mean field

:class:`AutoMonotoneFlow` stacks autoregressive layers with reversing permutations between them
and adds the posterior summaries (:meth:`~AutoMonotoneFlow.median`,
:meth:`~AutoMonotoneFlow.quantiles`) that Pyro's flow guides lack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.distributions.torch_transform import ComposeTransformModule
from pyro.distributions.transforms import Permute
from pyro.infer.autoguide import AutoNormalizingFlow
from pyro.nn import AutoRegressiveNN
from torch.distributions import biject_to

from .transforms.autoregressive import (
    ConstrainedMonotoneAutoregressive,
    UnconstrainedMonotoneAutoregressive,
    _default_hidden_dims,
    _free_size,
    _masked_network,
)
from .transforms.base import check_input_dim

__all__ = ["FAMILIES", "AutoMonotoneFlow"]

#: The flow families :class:`AutoMonotoneFlow` stacks.
FAMILIES = {
    "unconstrained": UnconstrainedMonotoneAutoregressive,
    "constrained": ConstrainedMonotoneAutoregressive,
}


class AutoMonotoneFlow(AutoNormalizingFlow):
    r"""
    An automatic guide over the entire (unconstrained) latent space: a standard Normal pushed
    through ``layers`` monotone autoregressive flows, the variable order reversed
    (:class:`~pyro.distributions.transforms.Permute`) between consecutive layers,

        :math:`q(z) = \mathcal{N}(u; 0, I)\,\big|\det \partial (T_L \circ P \circ \dots \circ
        T_1)(u) / \partial u\big|^{-1}, \qquad z = T_L(P(\dots T_1(u))).`

    Each :math:`T_\ell` is an :class:`~pyro_overparam_flows.UnconstrainedMonotoneAutoregressive`
    (``family="unconstrained"``, the default, which starts as the identity so the guide starts
    as the standard Normal) or a :class:`~pyro_overparam_flows.ConstrainedMonotoneAutoregressive`
    (``family="constrained"``). The last layer's order is the order of the model's sample
    sites, so a latent that scales later ones (the funnel's log-scale) conditions them.

    Sampling and scoring are one forward pass per layer. :meth:`median` and :meth:`quantiles`
    are the coordinate-wise quantiles of the flow, estimated from ``num_summary_samples`` draws
    with a fixed seed (repeatable, leaving the global random state untouched; the standard error
    of a median is about :math:`1.25\,\sigma / \sqrt{n}`), then mapped to each site's support
    as Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` guides do.

    Usage::

        guide = AutoMonotoneFlow(model, width=32, layers=2)
        svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 1e-2}), Trace_ELBO())
        for step in range(1000):
            svi.step(data)
        guide.quantiles([0.05, 0.5, 0.95])

    :param callable model: a Pyro model.
    :param str family: ``"unconstrained"`` or ``"constrained"``.
    :param int width: the hidden width m of each dimension's monotone network.
    :param int layers: the number of autoregressive flows.
    :param list[int] hidden_dims: the hidden layers of each autoregressive network (default two
        layers of ``10 * latent_dim``).
    :param int num_summary_samples: draws behind :meth:`median` and :meth:`quantiles`.
    :param family_kwargs: options of the chosen family (e.g. ``parametrization="ntk"``,
        ``activation="tanh"``), as for :class:`~pyro_overparam_flows.UnconstrainedMonotone` or
        :class:`~pyro_overparam_flows.ConstrainedMonotone`.

    References:

    [1] Kulin Shah, Amit Deshpande, Navin Goyal. Learning and Generalization in
    Overparameterized Normalizing Flows. AISTATS 2022. [arXiv:2106.10535]

    [2] Danilo Jimenez Rezende, Shakir Mohamed. Variational Inference with Normalizing Flows.
    ICML 2015. [arXiv:1505.05770]
    """

    def __init__(
        self,
        model: Callable,
        family: str = "unconstrained",
        width: int = 32,
        layers: int = 2,
        hidden_dims: Sequence[int] | None = None,
        *,
        num_summary_samples: int = 10000,
        **family_kwargs: Any,
    ):
        if family not in FAMILIES:
            allowed = ", ".join(repr(name) for name in FAMILIES)
            raise ValueError(f"unknown family {family!r}; allowed values are {allowed}")
        check_input_dim(layers, "layers")
        check_input_dim(num_summary_samples, "num_summary_samples")
        if hidden_dims is not None:
            hidden_dims = [check_input_dim(h, "each of hidden_dims") for h in hidden_dims]
        super().__init__(model, self._flow)
        self.family = family
        self.width = width
        self.layers = layers
        self.hidden_dims = hidden_dims
        self.num_summary_samples = num_summary_samples
        self.family_kwargs = dict(family_kwargs)
        # Build one layer now so that a bad width or family option fails here, not at the
        # first step.
        self._layer(2)

    def _layer(self, latent_dim: int) -> torch.nn.Module:
        constrained = self.family == "constrained"
        arn = _masked_network(
            AutoRegressiveNN,
            latent_dim,
            _default_hidden_dims(latent_dim, self.hidden_dims),
            param_dims=[_free_size(constrained, self.width, self.family_kwargs)],
            permutation=torch.arange(latent_dim),
        )
        return FAMILIES[self.family](latent_dim, arn, self.width, **self.family_kwargs)

    def _flow(self, latent_dim: int) -> ComposeTransformModule:
        parts: list = []
        reverse = torch.arange(latent_dim - 1, -1, -1)
        for index in range(self.layers):
            if index > 0:
                parts.append(Permute(reverse))
            parts.append(self._layer(latent_dim))
        return ComposeTransformModule(parts)

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | torch.Tensor, *args, **kwargs) -> dict:
        """
        Returns posterior quantiles of each latent variable. Example::

            print(guide.quantiles([0.05, 0.5, 0.95]))

        :param quantiles: the requested quantiles, each in [0, 1].
        :return: a dict mapping each sample site's name to a tensor of shape
            ``(len(quantiles),) + site shape``.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        posterior = self.get_posterior(*args, **kwargs)
        like = posterior.base_dist.mean
        levels = torch.as_tensor(quantiles, dtype=like.dtype, device=like.device).reshape(-1)
        if not bool(((levels >= 0) & (levels <= 1)).all()):
            raise ValueError(f"quantiles must lie in [0, 1], got {quantiles!r}")
        # manual_seed seeds every CUDA device: restore them all.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            draws = posterior.sample((self.num_summary_samples,))
        latents = torch.quantile(draws, levels, dim=0)
        result: dict[str, list] = {}
        for latent in latents:
            for site, unconstrained_value in self._unpack_latent(latent):
                result.setdefault(site["name"], []).append(
                    biject_to(site["fn"].support)(unconstrained_value)
                )
        return {name: torch.stack(values) for name, values in result.items()}

    @torch.no_grad()
    def median(self, *args, **kwargs) -> dict:
        """
        Returns the posterior median of each latent variable (coordinate-wise).

        :return: a dict mapping each sample site's name to its median.
        """
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}
