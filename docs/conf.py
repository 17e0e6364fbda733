"""Sphinx configuration for pyro-overparam-flows."""

import pyro_overparam_flows

project = "pyro-overparam-flows"
author = "The pyro-overparam-flows developers"
release = pyro_overparam_flows.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
intersphinx_mapping = {}
exclude_patterns = ["_build"]
html_theme = "alabaster"
