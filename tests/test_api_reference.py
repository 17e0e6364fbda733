"""The API reference (docs/api.rst) lists every public name, each with a runnable example.

For every module below, every name in its ``__all__`` is documented in docs/api.rst: by an
``.. automodule::`` entry of that module whose ``:members:`` option is empty (all members) or
names it, or by an ``.. autoclass::`` / ``.. autofunction::`` / ``.. autodata::`` entry of its
full name. A package that re-exports names (the top level, ``transforms``, ``experiments``,
``numerics``) may leave them to the module that defines them, so that each object is
documented once: the name then counts as documented when the same object under the same name is
documented in another listed module. Classes and functions have a ``>>>`` example in their
docstring (pytest's ``--doctest-modules`` runs it); constants have a ``#:`` doc comment, which
autodoc shows. No docstring or page refers to files outside the repository.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import pyro_overparam_flows

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.rst"
PACKAGE = ROOT / "pyro_overparam_flows"

MODULES = [
    "pyro_overparam_flows",
    "pyro_overparam_flows.transforms",
    "pyro_overparam_flows.transforms.family",
    "pyro_overparam_flows.transforms.constrained",
    "pyro_overparam_flows.transforms.unconstrained",
    "pyro_overparam_flows.transforms.elementwise",
    "pyro_overparam_flows.transforms.autoregressive",
    "pyro_overparam_flows.transforms.coupling",
    "pyro_overparam_flows.transforms.conditioners",
    "pyro_overparam_flows.transforms.base",
    "pyro_overparam_flows.transforms.cache",
    "pyro_overparam_flows.transforms.errors",
    "pyro_overparam_flows.guides",
    "pyro_overparam_flows.datasets",
    "pyro_overparam_flows.ntk",
    "pyro_overparam_flows.experiments",
    "pyro_overparam_flows.experiments.runs",
    "pyro_overparam_flows.experiments.sweep",
    "pyro_overparam_flows.experiments.summary",
    "pyro_overparam_flows.experiments.plots",
    "pyro_overparam_flows.experiments.infinite_width",
    "pyro_overparam_flows.parametrizations",
    "pyro_overparam_flows.maps",
    "pyro_overparam_flows.activations",
    "pyro_overparam_flows.positivity",
    "pyro_overparam_flows.training",
    "pyro_overparam_flows.numerics",
    "pyro_overparam_flows.numerics.quadrature",
    "pyro_overparam_flows.numerics.piecewise",
    "pyro_overparam_flows.numerics.root_finding",
    "pyro_overparam_flows.numerics.compilation",
    "pyro_overparam_flows.numerics.native",
    "pyro_overparam_flows.validation",
]

# Modules with no public API of their own: the command line.
NOT_DOCUMENTED = {"pyro_overparam_flows.__main__"}

# Text that points outside the repository.
FORBIDDEN = ("design.md", "shared/")

ALL_MEMBERS = None  # an automodule entry with an empty :members: option


def _entries(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """``(directive, target, options)`` of every ``.. auto*::`` directive of an .rst text; an
    option's value joins its continuation lines."""
    entries: list[tuple[str, str, dict[str, str]]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = re.match(r"\.\. (auto\w+)::\s*(\S+)\s*$", lines[index])
        index += 1
        if not match:
            continue
        options: dict[str, str] = {}
        name = None
        while index < len(lines) and (not lines[index].strip() or lines[index][0].isspace()):
            line = lines[index].strip()
            index += 1
            if not line:
                if name is not None:
                    break
                continue
            option = re.match(r":([\w-]+):\s*(.*)$", line)
            if option:
                name = option.group(1)
                options[name] = option.group(2)
            elif name is not None:
                options[name] += " " + line
        entries.append((match.group(1), match.group(2), options))
    return entries


def _documented() -> tuple[set[str], dict[str, set[str] | None]]:
    """The full names given to autoclass/autofunction/autodata directives, and for each
    automodule entry the members it documents (None: all)."""
    single: set[str] = set()
    modules: dict[str, set[str] | None] = {}
    for directive, target, options in _entries(API.read_text()):
        if directive != "automodule":
            single.add(target)
            continue
        if "members" in options:
            names = set(re.split(r"[\s,]+", options["members"].strip())) - {""}
            members = names or ALL_MEMBERS
        else:
            members = set()  # :no-members: (or no member option at all)
        previous = modules.get(target, set())
        if previous is ALL_MEMBERS or members is ALL_MEMBERS:
            modules[target] = ALL_MEMBERS
        else:
            modules[target] = previous | members
    return single, modules


SINGLE, AUTOMODULES = _documented()


def _aliases(module: str, name: str) -> list[str]:
    """The listed modules exporting the same object under ``name`` (``module`` first)."""
    value = getattr(importlib.import_module(module), name)
    others = [
        other
        for other in MODULES
        if other != module
        and name in importlib.import_module(other).__all__
        and getattr(importlib.import_module(other), name) is value
    ]
    return [module, *others]


def _covers(module: str, name: str) -> bool:
    if f"{module}.{name}" in SINGLE:
        return True
    if module not in AUTOMODULES:
        return False
    members = AUTOMODULES[module]
    return members is ALL_MEMBERS or name in members


def _has_doc_comment(module: str, name: str) -> bool:
    """Whether ``name`` is assigned at the top level of ``module``'s source right after a
    ``#:`` comment (autodoc's doc comment for data)."""
    try:
        source = inspect.getsource(importlib.import_module(module))
    except (OSError, TypeError):
        return False
    lines = source.splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
            return index > 0 and lines[index - 1].startswith("#:")
    return False


def _is_constant(value: object) -> bool:
    return not (inspect.isclass(value) or inspect.isroutine(value))


def test_every_module_is_listed():
    """Every module of the package is one of MODULES, so none escapes the checks below."""
    found = {pyro_overparam_flows.__name__}
    for info in pkgutil.walk_packages(pyro_overparam_flows.__path__, "pyro_overparam_flows."):
        found.add(info.name)
    assert found - NOT_DOCUMENTED == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_has_automodule_entry(module):
    assert module in AUTOMODULES, f"docs/api.rst has no '.. automodule:: {module}' entry"


@pytest.mark.parametrize("module", MODULES)
def test_public_names_are_documented(module):
    missing = [
        name
        for name in importlib.import_module(module).__all__
        if not any(_covers(alias, name) for alias in _aliases(module, name))
    ]
    assert not missing, f"docs/api.rst does not document {module}.{missing}"


@pytest.mark.parametrize("module", MODULES)
def test_public_names_have_examples(module):
    lacking = []
    for name in importlib.import_module(module).__all__:
        value = getattr(importlib.import_module(module), name)
        if _is_constant(value):
            continue
        if ">>>" not in (inspect.getdoc(value) or ""):
            lacking.append(name)
    assert not lacking, f"no '>>>' example in the docstring of {module}.{lacking}"


@pytest.mark.parametrize("module", MODULES)
def test_public_constants_have_doc_comments(module):
    lacking = []
    for name in importlib.import_module(module).__all__:
        value = getattr(importlib.import_module(module), name)
        if not _is_constant(value):
            continue
        aliases = [alias for alias in _aliases(module, name) if _covers(alias, name)]
        if not any(_has_doc_comment(alias, name) for alias in aliases):
            lacking.append(name)
    assert not lacking, f"no '#:' doc comment where autodoc shows {module}.{lacking}"


def _texts():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.read_text()
    for suffix in ("*.rst", "*.md"):
        for path in sorted((ROOT / "docs").rglob(suffix)):
            if "_build" not in path.parts:
                yield path, path.read_text()
    yield ROOT / "README.md", (ROOT / "README.md").read_text()


def test_no_reference_outside_the_repository():
    """Docstrings (and comments) of the package, the docs' pages and the README name no file
    outside the repository."""
    offending = [
        f"{path.relative_to(ROOT)}: {word!r}"
        for path, text in _texts()
        for word in FORBIDDEN
        if word in text
    ]
    assert not offending, offending


def test_the_checks_can_fail():
    """The parser and the rules reject what they should."""
    text = ".. automodule:: a.b\n   :members: x,\n      y\n\n.. automodule:: a.c\n   :no-members:\n"
    assert _entries(text) == [
        ("automodule", "a.b", {"members": "x, y"}),
        ("automodule", "a.c", {"no-members": ""}),
    ]
    assert not _has_doc_comment("pyro_overparam_flows.experiments.runs", "train_run")
    assert _has_doc_comment("pyro_overparam_flows.maps", "MIN_SLOPE")
    assert not _covers("pyro_overparam_flows.transforms", "ConstrainedMonotone")
