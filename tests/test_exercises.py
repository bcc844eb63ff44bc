"""Exercise sources build into a student and a solution notebook that grade as they should.

For every ``exercises/NN_*.py`` (and the fixture ``tests/fixtures/exercises/99_fixture.py``, so that
the builder is tested before any exercise exists): the solution version runs and every check
passes; in the student version every check cell fails with ``NotImplementedError`` or
``ExerciseFailed`` while every other cell runs; no line of a solution or a model answer reaches the
student version; the committed student notebook is a fresh build of its source. The format is
described in ``course/README.md``.
"""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "exercises" / "99_fixture.py"
EXERCISES = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.py"))
SOURCES = [FIXTURE, *EXERCISES]
FAILED_CHECKS = {"NotImplementedError", "ExerciseFailed"}


def _load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_exercises", ROOT / "course" / "build_exercises.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()
parametrize_sources = pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])


def _execute(nb, cwd: Path, *, allow_errors: bool):
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
    )
    return client.execute()


def _errors(cell) -> list[str]:
    return [o.ename for o in cell.outputs if o.output_type == "error"]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIREFORMER_FIGURES", str(tmp_path / "figures"))


@parametrize_sources
def test_solution_version_passes_every_check(source, tmp_path):
    _, solution = builder.build(source)
    _execute(solution, tmp_path, allow_errors=False)
    for cell in filter(builder.is_check_cell, _code_cells(solution)):
        printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert "PASS  " in printed, f"a check cell printed no PASS:\n{cell.source}"


@parametrize_sources
def test_student_version_fails_every_check_and_runs_the_rest(source, tmp_path):
    student, _ = builder.build(source)
    _execute(student, tmp_path, allow_errors=True)
    checks = 0
    for cell in _code_cells(student):
        errors = _errors(cell)
        if builder.is_check_cell(cell):
            checks += 1
            assert errors and errors[0] in FAILED_CHECKS, (
                f"this check cell {'raised ' + errors[0] if errors else 'passed'} with the stubs "
                f"empty; it must fail with NotImplementedError or ExerciseFailed:\n{cell.source}"
            )
        else:
            assert not errors, f"a cell that is not a check raised {errors[0]}:\n{cell.source}"
    assert checks >= 3, f"{checks} check cells; each notebook needs at least three exercises"


def _normalised(line: str) -> str:
    """A line without indentation and the '#' that percent-format markdown and comments carry."""
    return line.strip().lstrip("#").strip()


def _inside_and_outside(text: str) -> tuple[set[str], set[str]]:
    """Normalised lines inside the solution and answer regions of a source, and outside them."""
    begins = {"BEGIN SOLUTION": "END SOLUTION", "<!-- BEGIN ANSWER -->": "<!-- END ANSWER -->"}
    inside, outside, end = set(), set(), None
    for line in map(_normalised, text.splitlines()):
        if end is None and line in begins:
            end = begins[line]
        elif line == end:
            end = None
        else:
            (outside if end is None else inside).add(line)
    return inside - {""}, outside


@parametrize_sources
def test_no_solution_or_answer_reaches_the_student_version(source):
    student, solution = builder.build(source)
    student_lines = {_normalised(line) for c in student.cells for line in c.source.splitlines()}
    inside, outside = _inside_and_outside(source.read_text())
    leaked = sorted((inside - outside) & student_lines)
    assert not leaked, f"solution or answer lines in the student version: {leaked}"
    for nb in (student, solution):
        text = "\n".join(c.source for c in nb.cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN ANSWER" not in text
        assert "END SOLUTION" not in text and "END ANSWER" not in text


def test_student_version_stubs_and_links():
    student, _ = builder.build(FIXTURE)
    text = "\n".join(c.source for c in student.cells)
    assert "[notation](../../README.md#notation)" in text  # one folder further down
    assert "(https://arxiv.org/abs/2001.04451)" in text and "(#exercise-991-a" in text
    assert '\n    raise NotImplementedError("Exercise 99.1: write your code here")' in text
    assert text.count("Exercise 99.2: write your code here") == 2  # one cell, two regions
    assert "*Your answer:*" in text


@pytest.mark.parametrize("source", EXERCISES, ids=[s.stem for s in EXERCISES])
def test_committed_student_notebook_is_a_fresh_build(source):
    committed = ROOT / "exercises" / "student" / f"{source.stem}.ipynb"
    assert committed.exists(), f"{committed.name} is missing: run `make exercises` and commit it"
    student, _ = builder.build(source)
    assert nbformat.read(committed, as_version=4) == student, (
        f"{committed.name} is older than {source.name}: run `make exercises` and commit it"
    )


def test_make_exercises_writes_both_versions_and_rebuilds_the_same_bytes(tmp_path):
    assert builder.main([str(FIXTURE), "--out", str(tmp_path)]) == 0
    built = [tmp_path / folder / "99_fixture.ipynb" for folder in ("student", "solutions")]
    first = [path.read_bytes() for path in built]
    builder.main([str(FIXTURE), "--out", str(tmp_path)])
    assert [path.read_bytes() for path in built] == first


HEADER = "# %% [markdown]\n# ### Exercise 99.1: broken\n\n# %%\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEADER + "def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
        (HEADER + "def f():\n    return 1\n    # END SOLUTION\n", "without '# BEGIN SOLUTION'"),
        (
            HEADER + "def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION\n",
            "inside a region",
        ),
        ("# %%\ndef f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "heading"),
        ("# %% [markdown]\n# # BEGIN SOLUTION\n# # END SOLUTION\n", "in a markdown cell"),
        ("# %%\n# <!-- BEGIN ANSWER -->\n# <!-- END ANSWER -->\n", "in a code cell"),
        ("# %% [markdown]\n# <!-- BEGIN ANSWER -->\n# an answer\n", "never closed"),
        ("# %% [markdown]\n# ### Exercise 3.1: elsewhere\n", "number them 99.1, 99.2"),
        (
            HEADER + "# BEGIN SOLUTION\nx = 1\n# END SOLUTION\ngrading.check_true('a', x, 'b')\n",
            "a check cell holds a solution",
        ),
    ],
)
def test_format_errors_name_the_file_and_cell(tmp_path, text, message):
    source = tmp_path / "99_broken.py"
    source.write_text(text)
    with pytest.raises(builder.ExerciseFormatError, match=message) as error:
        builder.build(source)
    assert str(error.value).startswith("99_broken.py, cell ")


def test_colab_cell_installs_from_the_configured_address_and_guesses_none(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n')
    assert builder.repository_url(pyproject) is None
    assert "RuntimeError" in builder.colab_setup(None) and "git+" not in builder.colab_setup(None)
    pyproject.write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://e.org/r"\n')
    url = builder.repository_url(pyproject)
    assert url == "https://e.org/r" and "git+https://e.org/r" in builder.colab_setup(url)


def test_no_link_points_to_an_unpublished_address():
    if builder.repository_url() is not None:
        pytest.skip("a repository address is configured")
    for path in (ROOT / "README.md", ROOT / "course" / "guide.md"):
        text = path.read_text()
        for host in ("mybinder.org/v2/gh/", "colab.research.google.com/github/", "git+https://"):
            for match in re.finditer(re.escape(host) + r"[^\s)`]*", text):
                assert match[0].startswith(host + "<owner>/<name>"), (
                    f"{path.name} links to {match[0]}, but no repository address is configured"
                )
