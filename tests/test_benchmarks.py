"""The side-by-side benchmark runs as written, on our flows only (the peers are an extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_benchmark_prints_its_tables(tmp_path):
    output = tmp_path / "results.md"
    models = ["ours U-ReLU AR (exact)", "ours U-tanh AR (quadrature)", "ours C-tanh AR"]
    # Tensors large enough to be mapped pages of their own, so the resident set sees them.
    command = [sys.executable, "run.py", "--dims", "2", "--batches", "2048", "--repeats", "1"]
    command += ["--models", *models, "--output", str(output)]
    result = subprocess.run(
        command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    assert report.startswith("`python benchmarks/run.py --dims 2")
    for name in models:
        row = next(line for line in report.splitlines() if f"| {name} |" in line)
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        time, memory, sampling, error = (float(cell) for cell in cells[4:8])
        assert time > 0 and memory > 0 and sampling > 0, row
        assert error < 1e-4, row  # the round trip of our inverse
    elements = 2048 * 2 * 24 * 16  # B * d * K * m
    floor = next(
        line for line in report.splitlines() if line.startswith(f"| 2 | 2048 | {elements} |")
    )
    peaks = [float(cell) for cell in floor.strip("|").split("|")[5:]]
    assert len(peaks) == 3 and max(peaks) < 2 * min(peaks), floor  # no growth with K


def test_width_axis_reports_ns_per_pair_and_plots(tmp_path):
    output, plot = tmp_path / "widths.md", tmp_path / "widths.png"
    command = [sys.executable, "run.py", "--dims", "2", "--batches", "256", "--repeats", "1"]
    command += ["--widths", "4", "8", "--models", "ours C-tanh AR"]
    command += ["--output", str(output), "--plot", str(plot)]
    result = subprocess.run(
        command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in output.read_text().splitlines() if "| ours C-tanh AR |" in line]
    assert len(rows) == 2
    for row, width in zip(rows, (4, 8), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert int(cells[3]) == width
        milliseconds, per_pair = float(cells[5]), float(cells[6])
        # the ns per (row, unit) column is the time over B * d * m
        assert per_pair == pytest.approx(1e6 * milliseconds / (256 * 2 * width), rel=0.01)
    assert plot.read_bytes()[:4] == b"\x89PNG"
