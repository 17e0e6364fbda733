"""Sphinx configuration for pyro-overparam-flows."""

import shutil
from pathlib import Path

import pyro_overparam_flows

# The tutorials are notebooks in the repository's tutorials/ folder, stored with the outputs of a
# full run (python tutorials/refresh.py) and rendered without executing; they are copied beside
# their index page, where the toctree finds them.
DOCS = Path(__file__).resolve().parent
for notebook in sorted((DOCS.parent / "tutorials").glob("*.ipynb")):
    shutil.copy2(notebook, DOCS / "tutorials" / notebook.name)

project = "pyro-overparam-flows"
author = "The pyro-overparam-flows developers"
release = pyro_overparam_flows.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "myst_nb",
]
nb_execution_mode = "off"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
intersphinx_mapping = {}
exclude_patterns = ["_build"]
html_theme = "sphinx_rtd_theme"
