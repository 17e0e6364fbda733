"""Re-execute the tutorials in place at full size and store their outputs for the docs.

    python tutorials/refresh.py                          # every notebook
    python tutorials/refresh.py 01_monotone_flows.ipynb  # some of them

Each notebook runs in this folder with ``CI`` unset (full size), on a fresh kernel, cell by
cell; its wall time and date go into the notebook's metadata. A failing cell stops it and leaves
the stored file untouched. Before saving, what should not be stored is removed: progress bars
and other stderr streams, cell timing metadata, and this machine's absolute paths. Execution
counts are kept. Needs ``pip install -e ".[docs]"``.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT_SECONDS = 3600  # per cell


def clean(notebook: nbformat.NotebookNode) -> None:
    """Drop stderr streams (progress bars, warnings) and timing metadata; write this machine's
    paths relative to the repository."""
    paths = re.compile(re.escape(str(ROOT)) + r"/?")
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                continue
            if output.output_type == "stream":
                output.text = paths.sub("", output.text)
            elif "data" in output and "text/plain" in output.data:
                output.data["text/plain"] = paths.sub("", output.data["text/plain"])
            kept.append(output)
        cell.outputs = kept


def refresh(path: Path) -> float:
    """Execute ``path`` in place at full size; returns the wall time in seconds."""
    notebook = nbformat.read(path, as_version=4)
    environment = os.environ.pop("CI", None)
    start = time.perf_counter()
    try:
        NotebookClient(
            notebook,
            timeout=TIMEOUT_SECONDS,
            kernel_name="python3",
            resources={"metadata": {"path": str(HERE)}},
        ).execute()
    finally:
        if environment is not None:
            os.environ["CI"] = environment
    seconds = time.perf_counter() - start
    clean(notebook)
    notebook.metadata["full_run"] = {"seconds": round(seconds), "date": time.strftime("%Y-%m-%d")}
    nbformat.write(notebook, path)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook file names (default: all)")
    args = parser.parse_args()
    names = args.notebooks or sorted(p.name for p in HERE.glob("*.ipynb"))
    for name in names:
        path = HERE / name
        if not path.is_file():
            raise SystemExit(
                f"no notebook {path}; choose from {sorted(p.name for p in HERE.glob('*.ipynb'))}"
            )
        print(f"{name}: {refresh(path):.0f} s", flush=True)


if __name__ == "__main__":
    main()
