"""The paper's width study (Shah, Deshpande, Goyal, AISTATS 2022): training runs with the paper's
settings, the sweep over widths and seeds, its tidy results and figures; and the infinite-width
view measured across widths."""

from .infinite_width import kernel_convergence, laziness, plot_kernels
from .plots import plot_sweep
from .runs import (
    FAMILIES,
    LAYERS,
    PAPER_SETTINGS,
    DensityModel,
    RunResult,
    TrainingSetting,
    layer_distances,
    make_flow,
    prepare_data,
    train_run,
)
from .summary import format_table, summarize
from .sweep import FULL, QUICK, SweepConfig, run_sweep, write_results

__all__ = [
    "FAMILIES",
    "FULL",
    "LAYERS",
    "PAPER_SETTINGS",
    "QUICK",
    "DensityModel",
    "RunResult",
    "SweepConfig",
    "TrainingSetting",
    "format_table",
    "kernel_convergence",
    "laziness",
    "layer_distances",
    "make_flow",
    "plot_kernels",
    "plot_sweep",
    "prepare_data",
    "run_sweep",
    "summarize",
    "train_run",
    "write_results",
]
