"""Figures of a width sweep (matplotlib, saved to files)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .runs import FAMILIES, LAYERS, RunResult
from .summary import summarize

__all__ = ["plot_sweep"]

_COLORS = {"constrained": "tab:blue", "unconstrained": "tab:orange"}
_STYLES = {"hidden_weight": "-", "hidden_bias": "--", "output_weight": ":", "conditioner": "-."}


def _spread(sd: float) -> float:
    """An error bar's half-length: the sd over seeds, 0 for a single seed."""
    return 0.0 if math.isnan(sd) else sd


def _panels(plt, rows: int, columns: int):
    return plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)


def _save(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _present(rows: list[dict], key: str) -> bool:
    return any(math.isfinite(r[key]) for r in rows)


def plot_sweep(results: Sequence[RunResult], output: Path) -> dict[str, Path]:
    """Save three figures into ``output`` and return their paths:

    * ``nll_vs_width.png``: final train (dashed) and test (solid) NLL in the raw data's units
      against the width, one curve per family, error bars one standard deviation over seeds, the
      true distribution's test NLL as a grey line; one panel per data set.
    * ``distance_vs_width.png``: the relative distance of each layer from its initialization at
      the end of training against the width (log-log); one panel per data set and family.
    * ``learning_curves.png``: test NLL against epoch, one curve per width (mean over seeds).

    Figures are drawn with matplotlib's non-interactive Agg backend.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from pyro_overparam_flows.experiments import train_run
    >>> results = [train_run("mixture_of_betas", "unconstrained", 4, seed=0, epochs=1,
    ...                      train_size=64, test_size=32, progress=False)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     paths = plot_sweep(results, Path(folder))
    ...     for key, path in sorted(paths.items()):
    ...         print(key, path.name, path.exists())
    curves_figure learning_curves.png True
    distance_figure distance_vs_width.png True
    nll_figure nll_vs_width.png True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(results)
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    families = [f for f in FAMILIES if any(r["family"] == f for r in summary)]
    paths = {}

    figure, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.8), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        rows = [r for r in summary if r["dataset"] == dataset]
        for family in families:
            own = [r for r in rows if r["family"] == family]
            widths = [r["width"] for r in own]
            for split, style in (("test", "-o"), ("train", "--")):
                axis.errorbar(
                    widths,
                    [r[f"{split}_nll_raw_mean"] for r in own],
                    yerr=[_spread(r[f"{split}_nll_raw_sd"]) for r in own],
                    fmt=style,
                    color=_COLORS[family],
                    capsize=3,
                    markersize=4,
                    label=f"{family} ({split})",
                )
        axis.axhline(rows[0]["true_test_nll"], color="0.5", lw=1, label="true (test)")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("width m")
        axis.set_ylabel("NLL (nats per sample)")
        axis.set_title(dataset.replace("_", " "))
    axes[0][0].legend(frameon=False, fontsize=8)
    paths["nll_figure"] = _save(plt, figure, output / "nll_vs_width.png")

    figure, axes = _panels(plt, len(datasets), len(families))
    for row_axes, dataset in zip(axes, datasets, strict=True):
        for axis, family in zip(row_axes, families, strict=True):
            own = [r for r in summary if r["dataset"] == dataset and r["family"] == family]
            for layer in LAYERS:
                key = f"relative_distance_{layer}"
                if not _present(own, f"{key}_mean"):
                    continue
                axis.errorbar(
                    [r["width"] for r in own],
                    [r[f"{key}_mean"] for r in own],
                    yerr=[_spread(r[f"{key}_sd"]) for r in own],
                    fmt=_STYLES[layer],
                    marker="o",
                    markersize=3,
                    capsize=2,
                    label=layer.replace("_", " "),
                )
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("width m")
            axis.set_ylabel(r"$\|\theta_T - \theta_0\| / \|\theta_0\|$")
            axis.set_title(f"{dataset.replace('_', ' ')}, {family}", fontsize=10)
            axis.legend(frameon=False, fontsize=8)
    paths["distance_figure"] = _save(plt, figure, output / "distance_vs_width.png")

    figure, axes = _panels(plt, len(datasets), len(families))
    cmap = plt.get_cmap("viridis")
    for row_axes, dataset in zip(axes, datasets, strict=True):
        for axis, family in zip(row_axes, families, strict=True):
            own = [r for r in results if r.dataset == dataset and r.family == family]
            widths = sorted({r.width for r in own})
            for i, width in enumerate(widths):
                runs = [r for r in own if r.width == width]
                length = min(len(r.history) for r in runs)
                curve = [
                    sum(r.history[e]["test_nll_raw"] for r in runs) / len(runs)
                    for e in range(length)
                ]
                color = cmap(i / max(len(widths) - 1, 1))
                axis.plot(range(length), curve, color=color, label=f"m = {width}")
            axis.axhline(own[0].true_test_nll, color="0.5", lw=1)
            axis.set_xlabel("epoch")
            axis.set_ylabel("test NLL")
            axis.set_title(f"{dataset.replace('_', ' ')}, {family}", fontsize=10)
            axis.legend(frameon=False, fontsize=7)
    paths["curves_figure"] = _save(plt, figure, output / "learning_curves.png")
    return paths
