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

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from pyro.distributions.transforms import Permute
from pyro.infer.autoguide import AutoNormalizingFlow
from pyro.infer.autoguide.initialization import init_to_feasible
from pyro.params.param_store import param_with_module_name
from torch import nn
from torch.distributions import biject_to

from .transforms.autoregressive import (
    constrained_monotone_autoregressive,
    monotone_autoregressive,
    unconstrained_monotone_autoregressive,
)
from .transforms.family import Family
from .validation import check_choice, check_positive_int, check_positive_number

__all__ = ["FAMILIES", "AutoMonotoneFlow"]

#: The flow families :class:`AutoMonotoneFlow` stacks by name, each with the helper that builds
#: one of its layers.
FAMILIES = {
    "unconstrained": unconstrained_monotone_autoregressive,
    "constrained": constrained_monotone_autoregressive,
}


# The default parametrization of each family's layers. Under Adam every parameter moves by about
# the learning rate each step: with the mean-field output multiplier 1/m the integrand network's
# output then moves by about the learning rate too, not m times it (the positive weights of the
# constrained family move relative to their size either way).
_PARAMETRIZATIONS = {"unconstrained": "mean_field", "constrained": "standard"}


class _LocationScale(TransformModule):
    """z = loc + exp(log_scale) * u, coordinate-wise, with learned loc and log_scale: the last
    layer of :class:`AutoMonotoneFlow`, so the flows before it work in standardized units."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = 1

    def __init__(self, loc: torch.Tensor, scale: float):
        super().__init__(cache_size=1)
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(torch.full_like(self.loc, math.log(scale)))

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.loc, torch.exp(self.log_scale), u)

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_scale.expand(u.shape).sum(-1)


class _GuideConditioner(nn.Module):
    """The masked network of an :class:`AutoMonotoneFlow` layer with the entries of its output
    bias marked ``held`` (the constant offsets and log-scales, which the location-scale layer
    owns) kept at their start."""

    def __init__(self, network: nn.Module, held: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("held", held)
        self.register_buffer("start", network.layers[-1].bias.detach().reshape(held.shape).clone())

    @property
    def permutation(self) -> torch.Tensor:
        return self.network.permutation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        bias = self.network.layers[-1].bias.view_as(self.start)
        return torch.where(self.held, out - bias + self.start, out)


def _adopt_stored_parameters(name: str, module: torch.nn.Module) -> None:
    """Give ``module`` the values Pyro's param store holds for it under ``name`` (a store
    loaded from a file, or a guide built again), as :class:`~pyro.infer.autoguide.AutoNormal`
    reads its parameters back; a stored value of another shape is an error."""
    store = pyro.get_param_store()
    for parameter_name, parameter in module.named_parameters():
        full = param_with_module_name(name, parameter_name)
        if full in store and store[full].shape != parameter.shape:
            raise ValueError(
                f"Pyro's param store holds {full!r} of shape {tuple(store[full].shape)}, but "
                f"this guide's is {tuple(parameter.shape)}: the store belongs to another model "
                "or guide; call pyro.clear_param_store() first"
            )
    pyro.module(name, module, update_module_params=True)


class AutoMonotoneFlow(AutoNormalizingFlow):
    r"""
    An automatic guide over the entire (unconstrained) latent space: a standard Normal pushed
    through ``layers`` monotone autoregressive flows, the variable order reversed
    (:class:`~pyro.distributions.transforms.Permute`) between consecutive layers, and a learned
    location and scale per coordinate,

        :math:`z = \mu + \mathrm{diag}(e^{\lambda})\, T_L(P(\dots T_1(u))), \qquad
        u \sim \mathcal{N}(0, I).`

    Each :math:`T_\ell` is an :class:`~pyro_overparam_flows.UnconstrainedMonotoneAutoregressive`
    (``family="unconstrained"``, the default, which starts as the identity) or a
    :class:`~pyro_overparam_flows.ConstrainedMonotoneAutoregressive` (``family="constrained"``).
    The last layer's order is the order of the model's sample sites, so a latent that scales
    later ones (the funnel's log-scale) conditions them.

    The guide starts as :class:`~pyro.infer.autoguide.AutoNormal` does, :math:`\mu` from
    ``init_loc_fn``, with scales ``init_scale``. The location-scale layer carries the
    posterior's location and scale, so the flows work in standardized units and learn its
    shape; their own constant offsets and log-scales (which would duplicate it) are held at 0.
    Unconstrained layers default to ``parametrization="mean_field"``. With these defaults, on a
    conjugate Bayesian linear regression (200 points, 6 coefficients) 2000 steps of
    ``ClippedAdam`` at a learning rate decaying from 1e-2 to 1e-4, one particle, reach the exact
    posterior means within 0.17 posterior standard deviations and the standard deviations within
    8% (3 seeds; :class:`~pyro.infer.autoguide.AutoNormal` 0.13 sd and 5%). Decay the learning
    rate that far: a flow's many parameters make its gradients noisier than ``AutoNormal``'s,
    and the last iterate carries that noise. Decaying only to 1e-3 leaves the means 0.33-0.45 sd
    off with one particle (0.06-0.27 sd with four); at a constant 1e-2 the ELBO ends 0.3-1.7
    nats below ``AutoNormal``'s and the standard deviations 18-37% off (``AutoNormal``'s 9-12%).
    Scaling the conditioners' output weights by 1 / fan-in halves that noise, but learned a
    31-dimensional logistic regression posterior 1-3 nats worse, so the defaults do not.

    Sampling and scoring are one forward pass per layer. :meth:`median` and :meth:`quantiles`
    are the coordinate-wise quantiles of the flow, estimated from ``num_summary_samples`` draws
    with a fixed seed (repeatable, leaving the global random state untouched; the standard error
    of a median is about :math:`1.25\,\sigma / \sqrt{n}`), then mapped to each site's support
    as Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` guides do.

    Its parameters live in Pyro's param store and are read back from it, as
    :class:`~pyro.infer.autoguide.AutoNormal`'s are: after ``pyro.get_param_store().save(path)``
    and, in a new session, ``pyro.get_param_store().load(path)``, a new ``AutoMonotoneFlow`` of
    the same model and options is the trained guide (its samples under a seed are the trained
    guide's). Buffers are not in the param store: the frozen output layers of the paper's
    presets are redrawn, so save ``guide.state_dict()`` for those.

    Usage::

        guide = AutoMonotoneFlow(model, width=32, layers=2)
        optimizer = pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.01 ** (1 / 2000)})
        svi = SVI(model, guide, optimizer, Trace_ELBO())
        for step in range(2000):
            svi.step(data)
        guide.quantiles([0.05, 0.5, 0.95])

    A small run (one step; the parameters go to Pyro's param store under ``"transform"``):

    >>> import pyro.distributions as dist
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> def model():
    ...     pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    >>> pyro.clear_param_store()
    >>> guide = AutoMonotoneFlow(model, width=4, layers=2, num_summary_samples=100)
    >>> svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 1e-2}), Trace_ELBO())
    >>> isinstance(svi.step(), float)
    True
    >>> guide()["z"].shape, guide.quantiles([0.05, 0.5, 0.95])["z"].shape
    (torch.Size([2]), torch.Size([3, 2]))
    >>> pyro.clear_param_store()

    :param callable model: a Pyro model.
    :param family: ``"unconstrained"``, ``"constrained"``, or a callable returning a new
        :class:`~pyro_overparam_flows.transforms.family.Family` for each layer (then ``width``
        is not used and ``family_kwargs`` may only be ``scale`` and ``init_conditioner``).
    :param int width: the hidden width m of each dimension's monotone network.
    :param int layers: the number of autoregressive flows.
    :param list[int] hidden_dims: the hidden layers of each autoregressive network (default two
        layers of ``10 * latent_dim``).
    :param callable init_loc_fn: the initial location, per sample site, as for Pyro's
        autoguides (default :func:`~pyro.infer.autoguide.initialization.init_to_feasible`).
    :param float init_scale: the initial scale of every coordinate (default 1: the flows start
        on the standardized scale they work in; with :class:`~pyro.infer.autoguide.AutoNormal`'s
        0.1 the ELBO on Neal's funnel after 2000 steps was 0.01-0.12 nat lower).
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
        family: str | Callable[[], Family] = "unconstrained",
        width: int = 32,
        layers: int = 2,
        hidden_dims: Sequence[int] | None = None,
        *,
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 1.0,
        num_summary_samples: int = 10000,
        **family_kwargs: Any,
    ):
        if isinstance(family, str) or not callable(family):
            if isinstance(family, Family):
                raise ValueError(
                    "family takes a callable that returns a new Family for each layer (e.g. "
                    f"the class, or lambda: {type(family).__name__}(...)), not an instance"
                )
            check_choice(family, FAMILIES, "family")
        elif set(family_kwargs) - {"scale", "init_conditioner"}:
            unknown = sorted(set(family_kwargs) - {"scale", "init_conditioner"})
            raise ValueError(
                f"with a family factory, the options are scale and init_conditioner; got {unknown}"
                " (give the family its own options when you build it)"
            )
        check_positive_int(layers, "layers")
        check_positive_int(num_summary_samples, "num_summary_samples")
        if hidden_dims is not None:
            hidden_dims = [check_positive_int(h, "each of hidden_dims") for h in hidden_dims]
        check_positive_number(init_scale, "init_scale")
        super().__init__(model, self._flow)
        self.init_loc_fn = init_loc_fn
        self.init_scale = float(init_scale)
        self.family = family
        self.width = width
        self.layers = layers
        self.hidden_dims = hidden_dims
        self.num_summary_samples = num_summary_samples
        if isinstance(family, str):
            family_kwargs = {"parametrization": _PARAMETRIZATIONS[family], **family_kwargs}
        self.family_kwargs = family_kwargs
        # Build one layer now so that a bad width or family option fails here, not at the
        # first step.
        self._layer(2)

    def _layer(self, latent_dim: int) -> torch.nn.Module:
        options = {"hidden_dims": self.hidden_dims, "permutation": torch.arange(latent_dim)}
        if isinstance(self.family, str):
            build = FAMILIES[self.family]
            layer = build(latent_dim, self.width, **options, **self.family_kwargs)
        else:
            family = self.family()
            if not isinstance(family, Family):
                raise ValueError(f"family must return a Family, got {type(family).__name__}")
            layer = monotone_autoregressive(latent_dim, family, **options, **self.family_kwargs)
        # The location-scale layer owns the constant offsets and scales: the conditioner's
        # rows of the "offset" field and of the log-scale are held at their start.
        held = torch.zeros(layer.conditioner_size, latent_dim, dtype=torch.bool)
        start = 0
        for name, size in layer.family.free_fields():
            count = 1 if size is None else size
            if name == "offset":
                held[start : start + count] = True
            start += count
        if layer.scale:
            held[-1] = True
        layer.arn = _GuideConditioner(layer.arn, held)
        return layer

    def _flow(self, latent_dim: int) -> ComposeTransformModule:
        parts: list = []
        reverse = torch.arange(latent_dim - 1, -1, -1)
        for index in range(self.layers):
            if index > 0:
                parts.append(Permute(reverse))
            parts.append(self._layer(latent_dim))
        parts.append(_LocationScale(self._init_loc(), self.init_scale))
        flow = ComposeTransformModule(parts)
        # The name Pyro's PyroModule gives the attribute (also outside a call of the guide).
        prefix = self.__dict__["_pyro_name"]
        _adopt_stored_parameters(f"{prefix}.transform" if prefix else "transform", flow)
        return flow

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
