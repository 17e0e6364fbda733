"""Aggregating a sweep's runs: the final epoch's metrics over seeds, and their table."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .runs import RunResult

__all__ = ["format_table", "summarize"]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; NaN if any value is (a layer absent, a run that
    diverged), and a NaN deviation for a single value."""
    mean = math.fsum(values) / len(values)
    if len(values) == 1 or math.isnan(mean):
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(results: Sequence[RunResult]) -> list[dict]:
    """Final-epoch metrics aggregated over seeds: one row per (data set, family, width) with the
    mean and standard deviation of each metric (``<metric>_mean``, ``<metric>_sd``, the sample
    standard deviation, NaN for a single seed).

    >>> from pyro_overparam_flows.experiments import PAPER_SETTINGS
    >>> results = [
    ...     RunResult("mixture_of_betas", "unconstrained", 16, seed,
    ...               PAPER_SETTINGS["unconstrained"], 0.5, 0.6,
    ...               history=[{"epoch": 0, "test_nll": nll}])
    ...     for seed, nll in ((0, 1.0), (1, 2.0))
    ... ]
    >>> [row] = summarize(results)
    >>> row["seeds"], row["test_nll_mean"], round(row["test_nll_sd"], 4)
    (2, 1.5, 0.7071)
    """
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        key = (result.dataset, result.family, result.width)
        groups.setdefault(key, []).append(result.summary())
    metrics = [
        k
        for k, v in results[0].summary().items()
        if isinstance(v, float) and k not in ("true_train_nll", "true_test_nll", "learning_rate")
    ]
    rows = []
    for (dataset, family, width), finals in groups.items():
        row = {
            "dataset": dataset,
            "family": family,
            "parametrization": finals[0]["parametrization"],
            "width": width,
            "seeds": len(finals),
            "epochs": finals[0]["epoch"],
            "true_train_nll": finals[0]["true_train_nll"],
            "true_test_nll": finals[0]["true_test_nll"],
            "diverged": sum(f["diverged"] for f in finals),
        }
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = _mean_sd([f[metric] for f in finals])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["family"], r["width"]))


def format_table(summary: Sequence[dict]) -> str:
    """A plain-text table of the final train and test NLL (raw units, mean +- sd over seeds).

    :param summary: rows of :func:`summarize`.

    >>> row = {"dataset": "mixture_of_betas", "family": "unconstrained", "width": 16,
    ...        "train_nll_raw_mean": 0.1, "train_nll_raw_sd": 0.01,
    ...        "test_nll_raw_mean": 0.2, "test_nll_raw_sd": 0.02, "true_test_nll": 0.15}
    >>> lines = format_table([row]).splitlines()
    >>> print(lines[0])
    Final NLL in nats per sample, in the data's own (raw) units; mean +- sd over seeds.
    >>> print(" ".join(lines[2].split()))  # dataset, family, width, train, test, true test
    mixture_of_betas unconstrained 16 0.1000 +- 0.0100 0.2000 +- 0.0200 0.1500
    """
    lines = [
        "Final NLL in nats per sample, in the data's own (raw) units; mean +- sd over seeds.",
        f"{'dataset':<24}{'family':<15}{'width':>7}{'train NLL':>20}{'test NLL':>20}"
        f"{'true test':>11}",
    ]
    for row in summary:
        train = f"{row['train_nll_raw_mean']:.4f} +- {row['train_nll_raw_sd']:.4f}"
        test = f"{row['test_nll_raw_mean']:.4f} +- {row['test_nll_raw_sd']:.4f}"
        lines.append(
            f"{row['dataset']:<24}{row['family']:<15}{row['width']:>7}{train:>20}{test:>20}"
            f"{row['true_test_nll']:>11.4f}"
        )
    return "\n".join(lines)
