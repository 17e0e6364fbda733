"""The tutorials: each notebook runs end to end in smoke mode (``CI`` set), is listed in the
docs' toctree, and stores the outputs of a full run (a figure at least) without noise."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
SMOKE_SWITCH = 'smoke_test = "CI" in os.environ'


def code_cells(path: Path) -> list:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def test_there_are_tutorials():
    assert NOTEBOOKS, f"no notebooks in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_in_smoke_mode(path, monkeypatch):
    assert SMOKE_SWITCH in code_cells(path)[0].source, "the first code cell sets smoke_test"
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
    ).execute()  # raises CellExecutionError, with the cell and its traceback, on any failure


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_is_in_the_docs_toctree(path):
    index = (ROOT / "docs" / "tutorials" / "index.rst").read_text()
    toctree = index[index.index(".. toctree::") :]
    assert re.search(rf"^\s+{re.escape(path.stem)}\s*$", toctree, re.MULTILINE), path.stem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_stores_a_full_run_without_noise(path):
    cells = code_cells(path)
    assert all(cell.execution_count is not None for cell in cells), "run every cell"
    outputs = [output for cell in cells for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs), "no figure stored"
    text = "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "") for output in outputs
    )
    assert not any(output.get("name") == "stderr" for output in outputs), "stderr stored"
    assert str(ROOT) not in text and "/home/" not in text and "/tmp/" not in text
    assert "it/s]" not in text, "a progress bar stored"
    run = nbformat.read(path, as_version=4).metadata.get("full_run", {})
    assert run.get("seconds", 0) > 0, "store the outputs with python tutorials/refresh.py"
