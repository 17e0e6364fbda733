"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["z"].shape == (10, 1)
    assert namespace["loss"].requires_grad


def test_readme_guide_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2, "README.md has no guide example"
    namespace: dict = {}
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    summary = namespace["summary"]
    assert summary["y"].shape == (3,) and summary["x"].shape == (3, 9)
    assert bool((summary["x"][0] < summary["x"][2]).all())
