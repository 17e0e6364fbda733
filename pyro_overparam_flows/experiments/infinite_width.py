"""Measuring the infinite-width view across widths: how far the empirical
NTK at initialization is from its limit, and how far it moves in training (laziness).

``python -m pyro_overparam_flows kernels`` runs both and saves a figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..datasets import mixture_of_gaussians, zscore
from ..ntk import empirical_ntk, infinite_width_ntk, kernel_distance
from ..transforms import constrained_monotone, unconstrained_monotone
from ..validation import check_choice
from .runs import FAMILIES, layer_distances

__all__ = ["kernel_convergence", "laziness", "plot_kernels"]


def _flow(family: str, width: int, parametrization: str, dtype: torch.dtype):
    check_choice(family, FAMILIES, "family")
    if family == "constrained":
        # The weights themselves are the parameters, as in the infinite-width kernel.
        flow = constrained_monotone(
            1, width, parametrization=parametrization, positivity="projected"
        )
    else:
        flow = unconstrained_monotone(1, width, parametrization=parametrization)
    return flow.to(dtype)


def kernel_convergence(
    widths: Sequence[int] = (64, 256, 1024, 4096, 16384),
    seeds: Sequence[int] = (0, 1, 2, 3),
    *,
    families: Sequence[str] = FAMILIES,
    points: torch.Tensor | None = None,
    progress: bool = True,
) -> list[dict]:
    r"""The relative Frobenius distance :math:`\|\Theta_m - \Theta_\infty\|_F /
    \|\Theta_\infty\|_F` between the empirical network NTK at initialization (``"ntk"``
    parametrization, float64) and its infinite-width limit, for each family, width and seed.

    :param torch.Tensor points: scalar inputs (default 15 points on [-2, 2]).
    :returns: rows ``{"family", "width", "seed", "error"}``.

    >>> rows = kernel_convergence((16, 64), (0,), progress=False)
    >>> [(r["family"], r["width"]) for r in rows]
    [('constrained', 16), ('constrained', 64), ('unconstrained', 16), ('unconstrained', 64)]
    """
    x = torch.linspace(-2.0, 2.0, 15, dtype=torch.float64) if points is None else points
    x = x.double()
    rows = []
    limits: dict[str, torch.Tensor] = {}  # the limit depends on the family only
    grid = [(f, m, s) for f in families for m in widths for s in seeds]
    for family, width, seed in tqdm(grid, desc="NTK at init", disable=None if progress else True):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            flow = _flow(family, width, "ntk", torch.float64)
        if family not in limits:
            limits[family] = infinite_width_ntk(flow, x)
        limit = limits[family]
        error = float(kernel_distance(empirical_ntk(flow, x)[0], limit))
        rows.append({"family": family, "width": width, "seed": seed, "error": error})
    return rows


def laziness(
    widths: Sequence[int] = (16, 64, 256, 1024, 4096),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    families: Sequence[str] = FAMILIES,
    parametrization: str = "ntk",
    steps: int = 100,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict]:
    r"""Train each flow for a fixed budget and measure how far it moved: the kernel distance
    :math:`\|\Theta_T - \Theta_0\|_F / \|\Theta_0\|_F` of the network NTK on 11 points of
    [-2.5, 2.5] and the relative distance of each parameter from initialization.

    Each run fits the paper's z-scored 1-D mixture of Gaussians by maximum likelihood (standard
    normal base) with ``steps`` plain SGD steps of ``learning_rate`` on mini-batches of
    ``batch_size`` (projected for constrained flows), in float32.

    :returns: rows ``{"family", "width", "seed", "kernel_distance",
        "relative_distance_<layer>"}`` for the hidden weights, hidden biases and output weights.

    >>> rows = laziness((4, 8), (0,), families=("unconstrained",), steps=2, progress=False)
    >>> [(row["width"], row["kernel_distance"] > 0) for row in rows]
    [(4, True), (8, True)]
    >>> sorted(rows[0])[:3]
    ['family', 'kernel_distance', 'relative_distance_hidden_bias']
    """
    data = zscore(mixture_of_gaussians(2000, 10, seed=0, dtype=torch.float32)).train
    grid = torch.linspace(-2.5, 2.5, 11, dtype=torch.float32)
    rows = []
    runs = [(f, m, s) for f in families for m in widths for s in seeds]
    for family, width, seed in tqdm(runs, desc="laziness", disable=None if progress else True):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            flow = _flow(family, width, parametrization, torch.float32)
            initial_kernel = empirical_ntk(flow, grid)
            initial = {name: p.detach().clone() for name, p in flow.named_parameters()}
            optimizer = torch.optim.SGD(flow.parameters(), lr=learning_rate)
            for _ in range(steps):
                batch = data[torch.randint(len(data), (batch_size,))]
                z = flow(batch)
                loss = (0.5 * z.square() - flow.log_abs_det_jacobian(batch, z)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                flow.project_()  # projected SGD for constrained flows, a no-op otherwise
        row = {
            "family": family,
            "width": width,
            "seed": seed,
            "kernel_distance": float(kernel_distance(empirical_ntk(flow, grid), initial_kernel)[0]),
        }
        moved = layer_distances(flow, initial)
        for layer in ("hidden_weight", "hidden_bias", "output_weight"):
            row[f"relative_distance_{layer}"] = moved.get(layer, (math.nan, math.nan))[1]
        rows.append(row)
    return rows


def plot_kernels(convergence: list[dict], lazy: list[dict], path: Path) -> Path:
    """Two panels: the distance of the empirical NTK from its limit against the width with the
    :math:`1/\\sqrt{m}` slope for reference, and the kernel distance after training against the
    width; mean over seeds with the seeds' range as error bars. Saved to ``path`` (its folder
    is created), drawn with matplotlib's non-interactive Agg backend.

    :param convergence: rows of :func:`kernel_convergence`.
    :param lazy: rows of :func:`laziness`.

    >>> import tempfile
    >>> from pathlib import Path
    >>> convergence = [{"family": "unconstrained", "width": m, "seed": 0, "error": m**-0.5}
    ...                for m in (16, 64)]
    >>> lazy = [{"family": "unconstrained", "width": m, "seed": 0, "kernel_distance": 1 / m}
    ...         for m in (16, 64)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = plot_kernels(convergence, lazy, Path(folder) / "figures" / "kernels.png")
    ...     path.name, path.exists()
    ('kernels.png', True)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"constrained": "tab:blue", "unconstrained": "tab:orange"}
    figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for axis, rows, key, title in (
        (axes[0], convergence, "error", "empirical NTK at init vs its limit"),
        (axes[1], lazy, "kernel_distance", "kernel movement in training"),
    ):
        for family in colors:
            own = [r for r in rows if r["family"] == family]
            if not own:
                continue
            widths = sorted({r["width"] for r in own})
            values = [[r[key] for r in own if r["width"] == m] for m in widths]
            means = [sum(v) / len(v) for v in values]
            low = [mean - min(v) for mean, v in zip(means, values, strict=True)]
            high = [max(v) - mean for mean, v in zip(means, values, strict=True)]
            axis.errorbar(
                widths,
                means,
                yerr=[low, high],
                fmt="-o",
                color=colors[family],
                capsize=3,
                markersize=4,
                label=family,
            )
        if rows:
            widths = sorted({r["width"] for r in rows})
            start = sum(r[key] for r in rows if r["width"] == widths[0]) / sum(
                r["width"] == widths[0] for r in rows
            )
            axis.plot(
                widths,
                [start * (m / widths[0]) ** -0.5 for m in widths],
                "k:",
                lw=1,
                label=r"$\propto 1/\sqrt{m}$",
            )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("width m")
        axis.set_title(title, fontsize=10)
        axis.legend(frameon=False, fontsize=8)
    axes[0].set_ylabel(r"$\|\Theta_m - \Theta_\infty\|_F / \|\Theta_\infty\|_F$")
    axes[1].set_ylabel(r"$\|\Theta_T - \Theta_0\|_F / \|\Theta_0\|_F$")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
