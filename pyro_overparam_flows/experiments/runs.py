r"""One training run of the paper's width study (Shah, Deshpande, Goyal, AISTATS 2022).

Each family is trained as in the paper's code: plain SGD with a constant learning rate on
mini-batches of 32, maximizing the log-likelihood

.. math::

    \log p(x) = \log p_Z(z(x)) + \log|\det J_f(x)|,

whose two terms are logged apart (the *base* term :math:`-\log p_Z` and the *log-det* term
:math:`-\log|\det J_f|`), with the distance of each layer from its initialization.

* **constrained** (:data:`PAPER_SETTINGS` ``["constrained"]``): the paper's exact model (no
  tail), positive weights kept by projected SGD (``positivity="projected"``, clamp 1e-6 after
  each step), the ``"standard-normal"`` initialization, a standard normal base, z = f(x), data
  z-scored with the training statistics; learning rate 5e-4 for 200 epochs.
* **unconstrained** (``["unconstrained"]``): the paper's model (no tail), ReLU integrand with
  ELU + 1, output layer not trained (``"gaussian-sqrt(m)"``), a standard **exponential** base
  and the integral taken from the data's lower end :math:`x_0`, i.e.
  :math:`z_d = \int_{x_{0,d}}^{x_d} \phi(N_d(t))\,dt \ge 0`, data scaled into the ball of
  radius 1/2; learning rate 5e-3 for 100 epochs.

The paper's code, which has no test split for this family, integrates from the minimum of the
data it scores. Here :math:`x_0` is the coordinate-wise minimum over the training *and* test
points, so that every test point lies in the support of the exponential model (from the
training minimum alone, a test point below it would have zero density).

Multi-dimensional data use the autoregressive transforms with ``scale=False`` and the linear
conditioner (``hidden_dims=()``): dimension d's hidden pre-activations :math:`w_{dr} x_d +
b_{dr}(x_{<d})` are linear in :math:`(x_{<d}, x_d)`, the paper's multi-dimensional model, a
one-hidden-layer network per dimension. A setting's ``options`` may give other
``hidden_dims``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..datasets import PAPER_DATASETS, Preprocessed, Split, scale_to_ball, split_samples, zscore
from ..ntk import parameter_distances
from ..transforms import (
    MonotoneTransformModule,
    constrained_monotone,
    constrained_monotone_autoregressive,
    unconstrained_monotone,
    unconstrained_monotone_autoregressive,
)
from ..validation import check_choice

__all__ = [
    "FAMILIES",
    "LAYERS",
    "PAPER_SETTINGS",
    "DensityModel",
    "RunResult",
    "TrainingSetting",
    "layer_distances",
    "make_flow",
    "prepare_data",
    "train_run",
]

#: The two flow families of the width study: ``"constrained"``
#: (:class:`~pyro_overparam_flows.ConstrainedMonotone` and its autoregressive version) and
#: ``"unconstrained"`` (:class:`~pyro_overparam_flows.UnconstrainedMonotone` and its
#: autoregressive version).
FAMILIES = ("constrained", "unconstrained")

#: The layer groups whose distance from initialization is logged: the hidden weights w, the
#: hidden biases b (element-wise flows), the output weights a, and the autoregressive
#: conditioner that gives the hidden biases, offsets (and tails) of multi-dimensional flows.
LAYERS = ("hidden_weight", "hidden_bias", "output_weight", "conditioner")


@dataclass(frozen=True)
class TrainingSetting:
    """How one family is trained: the paper's values by default (:data:`PAPER_SETTINGS`).

    :param str parametrization: the initialization (a name from
        :mod:`pyro_overparam_flows.parametrizations`).
    :param float learning_rate: the constant SGD step size.
    :param int epochs: passes over the training set.
    :param int batch_size: the mini-batch size.
    :param str base: ``"normal"`` or ``"exponential"`` (the latter integrates from the data's
        lower end, unconstrained flows only).
    :param str preprocessing: ``"zscore"`` or ``"ball"`` (scaled into the ball of radius 1/2).
    :param options: further keyword arguments of the transform, as ``(name, value)`` pairs (a
        dict is accepted and stored as pairs, so settings stay immutable).

    >>> setting = TrainingSetting("ntk", 1e-2, 5, options={"tail": True})
    >>> setting.options, setting.batch_size
    ((('tail', True),), 32)
    >>> PAPER_SETTINGS["constrained"].learning_rate, PAPER_SETTINGS["constrained"].epochs
    (0.0005, 200)
    """

    parametrization: str
    learning_rate: float
    epochs: int
    batch_size: int = 32
    base: str = "normal"
    preprocessing: str = "zscore"
    options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        pairs = self.options.items() if isinstance(self.options, dict) else self.options
        object.__setattr__(self, "options", tuple((str(k), v) for k, v in pairs))


#: The paper's training setting of each family, as described above: the initialization, the
#: constant SGD learning rate, the epochs, the base distribution, the preprocessing and the
#: transform's options.
PAPER_SETTINGS: dict[str, TrainingSetting] = {
    "constrained": TrainingSetting(
        "standard-normal",
        5e-4,
        200,
        base="normal",
        preprocessing="zscore",
        options=(("tail", False), ("positivity", "projected")),
    ),
    "unconstrained": TrainingSetting(
        "gaussian-sqrt(m)",
        5e-3,
        100,
        base="exponential",
        preprocessing="ball",
        options=(("tail", False),),
    ),
}

_BASES = ("normal", "exponential")
_PREPROCESSING: dict[str, Callable] = {"zscore": zscore, "ball": scale_to_ball}


def make_flow(
    family: str, dim: int, width: int, setting: TrainingSetting
) -> torch.distributions.Transform:
    """The transform of ``family`` for ``dim``-dimensional data: element-wise for ``dim = 1``,
    autoregressive otherwise (``scale=False`` and the linear conditioner, ``hidden_dims=()``:
    the paper's model).

    >>> type(make_flow("unconstrained", 2, 16, PAPER_SETTINGS["unconstrained"])).__name__
    'UnconstrainedMonotoneAutoregressive'
    """
    check_choice(family, FAMILIES, "family")
    options = {"parametrization": setting.parametrization, **dict(setting.options)}
    if dim == 1:
        make = constrained_monotone if family == "constrained" else unconstrained_monotone
    else:
        make = (
            constrained_monotone_autoregressive
            if family == "constrained"
            else unconstrained_monotone_autoregressive
        )
        options = {"scale": False, "hidden_dims": (), **options}
    return make(dim, width, **options)


class DensityModel(nn.Module):
    r"""A flow scoring data through its forward map, with the log-likelihood's two terms apart:

    .. math::

        -\log p(x) = \underbrace{-\log p_Z(z)}_{\text{base}}
        \; \underbrace{- \log|\det J_f(x)|}_{\text{log-det}},

    with :math:`-\log p_Z(z) = \tfrac12 \|z\|^2 + \tfrac{D}{2} \log 2\pi`, z = f(x), for
    the normal base and :math:`-\log p_Z(z) = \sum_d z_d`,
    :math:`z_d = f_d(x_d) - f_d(x_{0,d}) \ge 0`, for the exponential one.

    :param transform: maps data to the base space.
    :param str base: ``"normal"`` (z = f(x), standard normal) or ``"exponential"``
        (:math:`z = f(x) - f(x_0)` coordinate by coordinate, standard exponential).
    :param torch.Tensor start: :math:`x_0`, shape ``(dim,)``, for the exponential base.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> model = DensityModel(unconstrained_monotone(1, width=4))  # the identity at first
    >>> x = torch.tensor([[0.0], [1.0]])
    >>> base, log_det = model.terms(x)
    >>> torch.allclose(model(x), base + log_det)
    True
    >>> [round(v, 4) for v in model(x).tolist()]  # (x^2 + log(2 pi)) / 2
    [0.9189, 1.4189]
    """

    def __init__(
        self, transform: nn.Module, base: str = "normal", start: torch.Tensor | None = None
    ):
        super().__init__()
        self.transform = transform
        self.base = check_choice(base, _BASES, "base")
        if (start is None) != (base == "normal"):
            raise ValueError("start is needed by the exponential base, and only by it")
        if base == "exponential" and not (
            isinstance(transform, MonotoneTransformModule) or hasattr(transform, "map_given")
        ):
            raise ValueError(
                "the exponential base needs an element-wise or autoregressive monotone flow, "
                f"got {type(transform).__name__}"
            )
        self.register_buffer("start", start)

    def terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(-log p_Z(z), -log|det J|)``, each of shape ``(n,)``."""
        if self.base == "normal":
            z = self.transform(x)
            log_det = self.transform.log_abs_det_jacobian(x, z)
            base = 0.5 * (z.square().sum(-1) + x.shape[-1] * math.log(2.0 * math.pi))
            return base, -log_det
        # z_d = f_d(x_d; x_<d) - f_d(x0_d; x_<d): an element-wise map needs its value at one
        # start row (computed in the same call); an autoregressive one its maps at x0 with the
        # conditioner fed x.
        n = len(x)
        if isinstance(self.transform, MonotoneTransformModule):
            both = torch.cat([x, self.start.unsqueeze(0)])
            z, at_start = self.transform(both).split([n, 1])
        else:
            z = self.transform(x)
            at_start = self.transform.map_given(x, self.start)
        log_det = self.transform.log_abs_det_jacobian(x, z)
        # Rounding can leave f(x) - f(x0) a hair below 0 at x = x0 itself; below x0 the
        # density is 0.
        base = (z - at_start).clamp(min=0.0).sum(-1)
        base = torch.where((x < self.start).any(-1), torch.full_like(base, math.inf), base)
        return base, -log_det

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample negative log-likelihood, shape ``(n,)``."""
        base, log_det = self.terms(x)
        return base + log_det


def prepare_data(
    dataset: str | Split,
    setting: TrainingSetting,
    *,
    train_size: int = 9000,
    test_size: int = 1000,
    seed: int = 0,
) -> tuple[Preprocessed, torch.Tensor | None, float, float]:
    """The data set's samples, preprocessed for ``setting``, with the start of the exponential
    base's integral (None for the normal base) and the true distribution's train and test NLL
    (raw units, nats per sample; NaN when it is not known).

    :param dataset: a key of :data:`~pyro_overparam_flows.datasets.PAPER_DATASETS` (drawn with
        ``train_size``, ``test_size`` and ``seed``), or a user's
        :class:`~pyro_overparam_flows.datasets.Split` (for example from
        :func:`~pyro_overparam_flows.datasets.split_samples`).

    >>> data, start, _, _ = prepare_data("mixture_of_betas", PAPER_SETTINGS["unconstrained"])
    >>> round(float(data.train.norm(dim=-1).max()), 6), bool((data.test >= start).all())
    (0.5, True)
    """
    if isinstance(dataset, Split):
        split = Split(dataset.train.double(), dataset.test.double(), dataset.distribution)
    else:
        make = PAPER_DATASETS[check_choice(dataset, tuple(PAPER_DATASETS), "dataset")]
        split = make(train_size, test_size, seed=seed, dtype=torch.float64)
    preprocess = _PREPROCESSING[
        check_choice(setting.preprocessing, tuple(_PREPROCESSING), "preprocessing")
    ]
    data = preprocess(split)
    start = None
    if check_choice(setting.base, _BASES, "base") == "exponential":
        start = torch.minimum(data.train.min(0).values, data.test.min(0).values)
    if split.distribution is None:
        return data, start, math.nan, math.nan
    true_train, true_test = (float(-split.distribution.log_prob(v).mean()) for v in split[:2])
    return data, start, true_train, true_test


def layer_of(name: str) -> str:
    """The :data:`LAYERS` group of a parameter name, or ``"other"`` (offsets, tails)."""
    for layer in ("hidden_weight", "hidden_bias", "output_weight"):
        if name.endswith(layer):
            return layer
    return "conditioner" if {"arn", "nn"} & set(name.split(".")) else "other"


def layer_distances(
    module: nn.Module, initial: dict[str, torch.Tensor]
) -> dict[str, tuple[float, float]]:
    """For each :data:`LAYERS` group present among the trained parameters: the Frobenius
    distance :math:`\\|\\theta_t - \\theta_0\\|` and the relative one
    :math:`\\|\\theta_t - \\theta_0\\| / \\|\\theta_0\\|` (parameters as stored, i.e. the raw
    values of constrained weights, which projected SGD keeps equal to the weights).

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> flow = unconstrained_monotone(1, width=4)
    >>> start = {name: p.detach().clone() for name, p in flow.named_parameters()}
    >>> with torch.no_grad():
    ...     _ = flow.hidden_bias.add_(1.0)
    >>> distances = layer_distances(flow, start)
    >>> sorted(distances)  # the offset is not a layer group
    ['hidden_bias', 'hidden_weight', 'output_weight']
    >>> round(distances["hidden_bias"][0], 5), distances["hidden_weight"]  # ||(1, 1, 1, 1)|| = 2
    (2.0, (0.0, 0.0))
    """
    moved: dict[str, float] = {}
    size: dict[str, float] = {}
    for name, (distance, _) in parameter_distances(module, initial).items():
        layer = layer_of(name)
        if layer != "other":
            moved[layer] = moved.get(layer, 0.0) + distance**2
            size[layer] = size.get(layer, 0.0) + float(initial[name].square().sum())
    return {
        layer: (math.sqrt(moved[layer]), math.sqrt(moved[layer] / max(size[layer], 1e-300)))
        for layer in moved
    }


@dataclass
class RunResult:
    """The configuration of one run and its per-epoch log (epoch 0 is the initialization).

    :func:`train_run` returns it; :meth:`to_dict` and :meth:`from_dict` save and load it as
    JSON (the sweep's checkpoints).

    >>> result = RunResult("mixture_of_betas", "unconstrained", 16, 0,
    ...                    PAPER_SETTINGS["unconstrained"], 0.5, 0.6,
    ...                    history=[{"epoch": 0, "test_nll": 1.25}])
    >>> result.rows()[0]["width"], result.summary()["test_nll"]
    (16, 1.25)
    >>> RunResult.from_dict(result.to_dict()) == result
    True
    """

    dataset: str
    family: str
    width: int
    seed: int
    setting: TrainingSetting
    true_train_nll: float
    true_test_nll: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False

    def rows(self) -> list[dict]:
        """Tidy rows: one per epoch, with the run's configuration."""
        head = {
            "dataset": self.dataset,
            "family": self.family,
            "parametrization": self.setting.parametrization,
            "width": self.width,
            "seed": self.seed,
        }
        return [{**head, **record} for record in self.history]

    def summary(self) -> dict:
        """The configuration, the final epoch's record, and the run's time."""
        return {
            **self.rows()[-1],
            "learning_rate": self.setting.learning_rate,
            "true_train_nll": self.true_train_nll,
            "true_test_nll": self.true_test_nll,
            "seconds": self.seconds,
            "diverged": self.diverged,
        }

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (:meth:`from_dict` reads it back)."""
        return {**asdict(self), "setting": asdict(self.setting)}

    @classmethod
    def from_dict(cls, values: dict) -> RunResult:
        """The result :meth:`to_dict` described (JSON's nulls read back as NaN)."""
        history = [
            {k: math.nan if v is None else v for k, v in row.items()} for row in values["history"]
        ]
        setting = TrainingSetting(**values["setting"])
        return cls(**{**values, "setting": setting, "history": history})


@torch.no_grad()
def _evaluate(model: DensityModel, x: torch.Tensor, chunk: int = 2048) -> tuple[float, float]:
    base = log_det = 0.0
    for part in x.split(chunk):
        b, d = model.terms(part)
        base, log_det = base + float(b.sum()), log_det + float(d.sum())
    return base / len(x), log_det / len(x)


def train_run(
    dataset: str | torch.Tensor | np.ndarray | Split,
    family: str,
    width: int,
    seed: int,
    *,
    setting: TrainingSetting | None = None,
    epochs: int | None = None,
    train_size: int = 9000,
    test_size: int = 1000,
    data_seed: int = 0,
    test_fraction: float = 0.1,
    name: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    eval_every: int = 1,
    progress: bool = True,
) -> RunResult:
    """Train one flow of ``family`` and width ``width`` on ``dataset`` as the paper does.

    The data are drawn once from ``data_seed``; ``seed`` sets the initialization and the
    mini-batch order, inside a forked RNG (the caller's random state is left as it was).

    :param dataset: a key of :data:`~pyro_overparam_flows.datasets.PAPER_DATASETS` (drawn with
        ``train_size``, ``test_size`` and ``data_seed``), or your own data: samples of shape
        ``(n, d)`` (a tensor or array; ``test_fraction`` of them, shuffled by ``data_seed``, are
        held out) or a :class:`~pyro_overparam_flows.datasets.Split`. The true NLL of your own
        data is not known (NaN).
    :param str family: ``"constrained"`` or ``"unconstrained"``.
    :param int width: the hidden width m.
    :param int seed: the run's seed.
    :param TrainingSetting setting: defaults to ``PAPER_SETTINGS[family]``.
    :param int epochs: overrides the setting's number of epochs.
    :param float test_fraction: the held-out share of your own samples.
    :param str name: the data set's name in the result (default: the key, or ``"data"``).
    :param int eval_every: the whole training set is scored after every ``eval_every``-th
        epoch and the last (its NLL is NaN in the other epochs' rows); the test set after every
        epoch.
    :returns: a :class:`RunResult` whose history has, for epochs 0 (initialization) to E, the
        train and test NLL on the preprocessed scale with its base and log-det terms
        (``train_nll = train_base + train_logdet``), the NLL in the raw data's units
        (``*_nll_raw``, comparable with the true density's), the mean mini-batch loss of the
        epoch with its terms (``running_nll``, ``running_base``, ``running_logdet``; NaN at
        epoch 0), and ``distance_<layer>`` / ``relative_distance_<layer>`` for each layer
        group of :data:`LAYERS`.

    >>> result = train_run("mixture_of_gaussians", "unconstrained", 8, seed=0, epochs=1,
    ...                    train_size=64, test_size=32, progress=False)
    >>> [r["epoch"] for r in result.history]
    [0, 1]
    """
    check_choice(family, FAMILIES, "family")
    setting = PAPER_SETTINGS[family] if setting is None else setting
    if epochs is not None:
        setting = replace(setting, epochs=epochs)
    if setting.epochs < 0 or setting.batch_size < 1 or eval_every < 1:
        raise ValueError(
            "epochs must be >= 0, batch_size and eval_every >= 1, got "
            f"{setting.epochs}, {setting.batch_size}, {eval_every}"
        )
    if isinstance(dataset, str):
        name = dataset if name is None else name
    else:
        if not isinstance(dataset, Split):
            dataset = split_samples(dataset, test_fraction, seed=data_seed)
        name = "data" if name is None else name
    data, start, true_train, true_test = prepare_data(
        dataset, setting, train_size=train_size, test_size=test_size, seed=data_seed
    )
    # log p_raw(x) = log p(T x) + log|det T| for the preprocessing's affine map T.
    log_det_preprocessing = float(data.transform.scale.log().sum())
    train = data.train.to(device=device, dtype=dtype)
    test = data.test.to(device=device, dtype=dtype)
    result = RunResult(name, family, width, seed, setting, true_train, true_test)
    began = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transform = make_flow(family, train.shape[-1], width, setting)
        if start is not None:
            start = start.to(device=device, dtype=dtype)
        model = DensityModel(transform, setting.base, start).to(device=device, dtype=dtype)
        initial = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=setting.learning_rate)
        project = getattr(transform, "project_", None)
        order = torch.Generator().manual_seed(seed)

        def record(epoch: int, running: tuple[float, float]) -> dict:
            row: dict = {"epoch": epoch}
            whole = epoch % eval_every == 0 or epoch == setting.epochs
            for name, x in (("train", train), ("test", test)):
                base, log_det = _evaluate(model, x) if whole or name == "test" else running_nan
                row[f"{name}_nll"] = base + log_det
                row[f"{name}_base"] = base
                row[f"{name}_logdet"] = log_det
                row[f"{name}_nll_raw"] = base + log_det - log_det_preprocessing
            row["running_nll"] = sum(running)
            row["running_base"], row["running_logdet"] = running
            distances = layer_distances(model, initial)
            for layer in LAYERS:
                absolute, relative = distances.get(layer, (math.nan, math.nan))
                row[f"distance_{layer}"] = absolute
                row[f"relative_distance_{layer}"] = relative
            return row

        running_nan = (math.nan, math.nan)
        result.history.append(record(0, running_nan))
        bar = tqdm(
            range(1, setting.epochs + 1),
            desc=f"{name} {family} m={width} seed={seed}",
            disable=None if progress else True,
            leave=False,
        )
        for epoch in bar:
            sums = train.new_zeros(2)
            for index in torch.randperm(len(train), generator=order).split(setting.batch_size):
                base, log_det = model.terms(train[index.to(device)])
                loss = (base + log_det).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if project is not None:
                    project()
                sums += torch.stack([base.sum(), log_det.sum()]).detach()
            base, log_det = (sums / len(train)).tolist()
            row = record(epoch, (base, log_det))
            finite = math.isfinite(row["test_nll"]) and math.isfinite(row["running_nll"])
            result.history.append(row)
            bar.set_postfix(train=f"{row['running_nll']:.4f}", test=f"{row['test_nll']:.4f}")
            if not finite:
                result.diverged = True
                break
    result.seconds = time.perf_counter() - began
    return result
