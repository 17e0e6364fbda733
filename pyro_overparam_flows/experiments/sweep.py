"""The width sweep: both families across widths and seeds, written to tidy files and plotted.

``python -m pyro_overparam_flows sweep --quick`` runs :data:`QUICK` (a few minutes on a CPU);
``python -m pyro_overparam_flows sweep`` runs :data:`FULL`, the paper's settings on the 1-D data
sets. The Python API is :func:`run_sweep`:

>>> config = SweepConfig(datasets=("mixture_of_gaussians",), widths=(4, 8), seeds=(0,),
...                      epochs=1, train_size=64, test_size=32)
>>> results = run_sweep(config, progress=False)
>>> len(results), sorted({r.family for r in results})
(4, ['constrained', 'unconstrained'])
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..datasets import PAPER_DATASETS, load_samples
from ..validation import check_choice, check_positive_int
from .runs import FAMILIES, PAPER_SETTINGS, RunResult, TrainingSetting, train_run
from .summary import format_table, summarize

__all__ = [
    "FULL",
    "QUICK",
    "SweepConfig",
    "run_sweep",
    "write_results",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class SweepConfig:
    """A grid of runs: every data set x family x width x seed.

    :param datasets: keys of :data:`~pyro_overparam_flows.datasets.PAPER_DATASETS`.
    :param data_files: your own data sets: files of samples that
        :func:`~pyro_overparam_flows.datasets.load_samples` reads (text as the paper's data
        files, ``.csv`` or ``.npy``), each named by its file name without suffix; all their
        samples are used, ``test_fraction`` of them held out (``train_size`` and
        ``test_size`` apply to the built-in data sets only).
    :param float test_fraction: the held-out share of each data file.
    :param families: ``"constrained"`` and/or ``"unconstrained"``.
    :param widths: hidden widths m.
    :param seeds: run seeds (initialization and batch order; the data are fixed by
        ``data_seed``).
    :param epochs: overrides the paper's epochs (200 constrained, 100 unconstrained) if set.
    :param settings: per-family :class:`~pyro_overparam_flows.experiments.TrainingSetting`
        (default :data:`~pyro_overparam_flows.experiments.PAPER_SETTINGS`).
    :param int eval_every: score the whole training set every this many epochs (and at the
        end); the test set is scored every epoch.
    :param int jobs: runs trained at once, each in its own process.
    :param int threads: torch threads per run.

    >>> config = SweepConfig(datasets=("mixture_of_betas",), widths=(4, 16), seeds=(0,))
    >>> for run in config.runs():  # (dataset, family, width, seed), widest first
    ...     print(run)
    ('mixture_of_betas', 'constrained', 16, 0)
    ('mixture_of_betas', 'unconstrained', 16, 0)
    ('mixture_of_betas', 'constrained', 4, 0)
    ('mixture_of_betas', 'unconstrained', 4, 0)
    """

    datasets: tuple[str, ...] = ("mixture_of_gaussians", "mixture_of_betas")
    data_files: tuple[str, ...] = ()
    test_fraction: float = 0.1
    families: tuple[str, ...] = FAMILIES
    widths: tuple[int, ...] = (8, 32, 128, 512, 2048)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    train_size: int = 9000
    test_size: int = 1000
    data_seed: int = 0
    eval_every: int = 1
    settings: dict[str, TrainingSetting] = field(default_factory=lambda: dict(PAPER_SETTINGS))
    device: str = "cpu"
    dtype: str = "float32"
    jobs: int = 1
    threads: int = 1

    def __post_init__(self):
        for name in self.datasets:
            check_choice(name, PAPER_DATASETS, "dataset")
        names = [*self.datasets, *self.files()]
        if len(set(names)) != len(names):
            raise ValueError(f"data set names must be distinct, got {names}")
        for path in self.data_files:
            if not Path(path).is_file():
                raise ValueError(f"data file {path!r} does not exist")
        if not (isinstance(self.test_fraction, float | int) and 0 < self.test_fraction < 1):
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction!r}")
        for family in self.families:
            check_choice(family, FAMILIES, "family")
        if not names or not self.families or not self.widths or not self.seeds:
            raise ValueError(
                "datasets (or data_files), families, widths and seeds must each be non-empty"
            )
        if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in self.widths):
            raise ValueError(f"widths must be integers >= 1, got {self.widths}")
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        check_choice(self.dtype, _DTYPES, "dtype")
        if self.jobs < 1 or self.threads < 1:
            raise ValueError(f"jobs and threads must be >= 1, got {self.jobs}, {self.threads}")
        for name in ("train_size", "test_size", "eval_every"):
            check_positive_int(getattr(self, name), name)
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {self.seeds}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: CUDA is not available on this machine")

    def files(self) -> dict[str, str]:
        """The data files by data set name (the file name without its suffix).

        >>> SweepConfig(datasets=(), data_files=("nonexistent.txt",)).files()
        Traceback (most recent call last):
            ...
        ValueError: data file 'nonexistent.txt' does not exist
        """
        return {Path(path).stem: str(path) for path in self.data_files}

    def runs(self) -> list[tuple[str, str, int, int]]:
        """(dataset, family, width, seed) of every run, widest first (the longest runs start
        first, so parallel jobs finish together)."""
        return [
            (d, f, m, s)
            for m in sorted(self.widths, reverse=True)
            for d in (*self.datasets, *self.files())
            for f in self.families
            for s in self.seeds
        ]


#: The paper's settings on the 1-D data sets: 3 seeds, widths 2^3 ... 2^11 by factors of 4,
#: two runs at a time (about an hour on a 2-core CPU).
FULL = SweepConfig(eval_every=10, jobs=2)

#: A small grid with 10 epochs for a look in a few minutes on a CPU.
QUICK = SweepConfig(widths=(16, 256, 4096), seeds=(0, 1), epochs=10, train_size=2000)


def _run(config: SweepConfig, run: tuple[str, str, int, int], progress: bool) -> RunResult:
    torch.set_num_threads(config.threads)
    dataset, family, width, seed = run
    files = config.files()
    return train_run(
        load_samples(files[dataset]) if dataset in files else dataset,
        family,
        width,
        seed,
        setting=config.settings[family],
        epochs=config.epochs,
        train_size=config.train_size,
        test_size=config.test_size,
        data_seed=config.data_seed,
        test_fraction=config.test_fraction,
        name=dataset,
        eval_every=config.eval_every,
        device=config.device,
        dtype=_DTYPES[config.dtype],
        progress=progress,
    )


def _checkpoint(folder: Path, run: tuple[str, str, int, int]) -> Path:
    dataset, family, width, seed = run
    return folder / f"{dataset}-{family}-m{width}-seed{seed}.json"


def run_sweep(
    config: SweepConfig, progress: bool = True, checkpoints: Path | None = None
) -> list[RunResult]:
    """Train every run of ``config`` (in ``config.jobs`` processes) and return the results in
    the order of :meth:`SweepConfig.runs`.

    :param checkpoints: a folder where each finished run is saved as JSON; runs already saved
        there by the same configuration are loaded instead of trained again, so an interrupted
        sweep resumes where it stopped.

    >>> import tempfile
    >>> from pathlib import Path
    >>> config = SweepConfig(datasets=("mixture_of_betas",), families=("unconstrained",),
    ...                      widths=(4,), seeds=(0,), epochs=1, train_size=64, test_size=32)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     first = run_sweep(config, progress=False, checkpoints=Path(folder))
    ...     again = run_sweep(config, progress=False, checkpoints=Path(folder))  # loaded
    >>> [(r.family, r.width, len(r.history)) for r in first]
    [('unconstrained', 4, 2)]
    >>> again[0].history[-1]["test_nll"] == first[0].history[-1]["test_nll"]
    True
    """
    runs = config.runs()
    bar = tqdm(total=len(runs), desc="sweep", unit="run", disable=None if progress else True)
    results: dict[tuple, RunResult] = {}
    if checkpoints is not None:
        checkpoints.mkdir(parents=True, exist_ok=True)
        for run in runs:
            path = _checkpoint(checkpoints, run)
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):  # missing, or cut short: train it (again)
                continue
            if _normalized(saved.get("config")) == _describe(config):
                results[run] = RunResult.from_dict(saved["result"])
        bar.update(len(results))

    def finished(run: tuple, result: RunResult) -> None:
        results[run] = result
        if checkpoints is not None:
            document = {"config": _describe(config), "result": result.to_dict()}
            path = _checkpoint(checkpoints, run)
            # Written whole or not at all: an interruption cannot leave half a file.
            partial = path.with_suffix(".partial")
            partial.write_text(_dumps(document))
            os.replace(partial, path)
        bar.set_postfix_str(f"done {run[0]} {run[1]} m={run[2]} seed={run[3]}")
        bar.update()

    remaining = [run for run in runs if run not in results]
    if config.jobs == 1:
        threads = torch.get_num_threads()
        try:
            for run in remaining:
                finished(run, _run(config, run, progress))
        finally:
            torch.set_num_threads(threads)
    elif remaining:
        with ProcessPoolExecutor(config.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run, config, run, False): run for run in remaining}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    bar.close()
    return [results[run] for run in runs]


def _describe(config: SweepConfig) -> dict:
    """What decides a run's outcome: the configuration without the grid and the scheduling."""
    described = {
        **asdict(config),
        "settings": {k: asdict(v) for k, v in config.settings.items()},
    }
    for key in ("datasets", "families", "widths", "seeds", "jobs", "threads"):
        described.pop(key)
    return json.loads(_dumps(described))


def _normalized(described: dict | None) -> dict | None:
    """A saved description with its settings read back through :class:`TrainingSetting`, so
    equal settings compare equal whatever form their options were saved in."""
    if not isinstance(described, dict) or "settings" not in described:
        return None
    settings = {k: asdict(TrainingSetting(**v)) for k, v in described["settings"].items()}
    # Runs saved before data files existed used the built-in data sets only.
    defaults = {"data_files": [], "test_fraction": SweepConfig.test_fraction}
    return json.loads(_dumps({**defaults, **described, "settings": settings}))


def _strict(value):
    """NaN and infinities as JSON null (they are not valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _dumps(document: dict, **options) -> str:
    return json.dumps(_strict(document), allow_nan=False, default=str, **options)


def _write_csv(path: Path, rows: list[dict]) -> None:
    # Seven significant digits: more than the runs' seed-to-seed spread, half the file size.
    short = lambda v: f"{v:.7g}" if isinstance(v, float) else v  # noqa: E731
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: short(v) for k, v in row.items()} for row in rows)


def write_results(
    results: Sequence[RunResult], config: SweepConfig, output: Path, command: str = ""
) -> dict[str, Path]:
    """Write ``history.csv`` (one row per run and epoch), ``summary.csv`` (one row per data
    set, family and width, mean and sd over seeds), ``table.txt`` (:func:`format_table`),
    ``sweep.json`` (the configuration, the
    command, every run's summary) and the figures of
    :func:`~pyro_overparam_flows.experiments.plot_sweep` into ``output``; return their paths.

    >>> import tempfile
    >>> from pathlib import Path
    >>> config = SweepConfig(datasets=("mixture_of_betas",), families=("unconstrained",),
    ...                      widths=(4,), seeds=(0,), epochs=1, train_size=64, test_size=32)
    >>> results = run_sweep(config, progress=False)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     paths = write_results(results, config, Path(folder))
    ...     written = sorted(path.name for path in paths.values() if path.exists())
    >>> for name in written:
    ...     print(name)
    distance_vs_width.png
    history.csv
    learning_curves.png
    nll_vs_width.png
    summary.csv
    sweep.json
    table.txt
    """
    from .plots import plot_sweep

    output.mkdir(parents=True, exist_ok=True)
    paths = {"history": output / "history.csv", "summary": output / "summary.csv"}
    _write_csv(paths["history"], [row for result in results for row in result.rows()])
    summary = summarize(results)
    _write_csv(paths["summary"], summary)
    paths["table"] = output / "table.txt"
    paths["table"].write_text(format_table(summary) + "\n")
    paths["json"] = output / "sweep.json"
    document = {
        "command": command,
        "config": {
            **asdict(config),
            "settings": {k: asdict(v) for k, v in config.settings.items()},
        },
        "seconds": {
            "total": math.fsum(r.seconds for r in results),
            "per_run": {
                f"{r.dataset} {r.family} m={r.width} seed={r.seed}": r.seconds for r in results
            },
        },
        "torch": torch.__version__,
        "runs": [result.summary() for result in results],
        "summary": summary,
    }
    paths["json"].write_text(_dumps(document, indent=1))
    paths.update(plot_sweep(results, output))
    return paths
