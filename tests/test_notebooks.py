"""Each notebook's jupytext source (.py) and executed copy (.ipynb) must hold the same cells.

The .py file is what authors edit and reviewers read; the .ipynb is what readers open and what nbval
re-executes in `make test`. `make notebooks` rebuilds the second from the first; this test catches
an edit to one that was never carried to the other.
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.source.strip()]


def test_there_are_notebooks():
    assert SOURCES, "no notebooks/NN_*.py sources found"


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_source_and_notebook_hold_the_same_cells(source):
    built = source.with_suffix(".ipynb")
    assert built.exists(), f"{built.name} is missing: run `make notebooks`"
    assert _cells(jupytext.read(source)) == _cells(nbformat.read(built, as_version=4))


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_is_executed_without_errors(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code and all(c.execution_count is not None for c in code), "not fully executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"stored outputs contain errors: {[e.ename for e in errors]}"
