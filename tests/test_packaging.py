"""The conda path (environment.yml) and the pip path (pyproject.toml) name the same packages."""

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)")


def _name(requirement: str) -> str:
    return NAME.match(requirement).group(1).lower().replace("_", "-")


def pyproject_names() -> set[str]:
    """Runtime, notebooks and test requirements; the optional GPU extra and marker-gated backports
    (tomli on Python 3.10, which the conda environment does not use) are left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = project["dependencies"] + extras["notebooks"] + extras["test"]
    return {_name(r) for r in reqs if ";" not in r}


def environment_names() -> set[str]:
    """Conda packages listed under dependencies (not the pip sub-list, not python or pip)."""
    names = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:\n", 1)[1].splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.\-]+)", line)
        if match:
            names.add(_name(match.group(1)))
    return names - {"python", "pip"}


def test_environment_yml_matches_pyproject():
    assert environment_names() == pyproject_names()


def test_environment_yml_installs_the_package_editable():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+- -e \.\s*$", text, re.MULTILINE)


def test_environment_names_are_parsed():
    # Guard against a parser that silently finds nothing and makes the first test vacuous.
    assert {"numpy", "matplotlib", "nbval", "jupytext"} <= environment_names()
    assert {"numpy", "matplotlib", "nbval", "jupytext"} <= pyproject_names()


def test_the_console_script_names_a_function_that_exists():
    """``minireformer`` on the PATH (``[project.scripts]``) runs the command line's ``main``."""
    import importlib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["minireformer"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
