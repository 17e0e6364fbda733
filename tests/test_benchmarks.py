"""The side-by-side benchmark runs as written, on our flows only (the peers are an extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
