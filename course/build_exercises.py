"""Build each exercise source into a student notebook and a solution notebook (`make exercises`).

An exercise source ``exercises/NN_topic.py`` is a jupytext percent-format file that holds the
solutions between marker lines (the format is described in ``course/README.md``):

- in code cells, lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION``: the student version
  gets ``raise NotImplementedError("Exercise N.M: ...")`` in their place, indented as the
  ``# BEGIN SOLUTION`` line, N.M read from the ``### Exercise N.M`` heading above the cell;
- in markdown cells, lines between ``<!-- BEGIN ANSWER -->`` and ``<!-- END ANSWER -->``: the
  student version gets ``*Your answer:*``, the solution version ``*Model answer:*`` and the answer;
- relative Markdown links, written from ``exercises/``, get a ``../`` in front, since the built
  notebooks are one folder further down.

Both versions are written unexecuted, with a Colab set-up cell at the top, to
``exercises/student/NN_topic.ipynb`` and ``exercises/solutions/NN_topic.ipynb``. Cell ids are
numbered, so that rebuilding an unchanged source writes the same bytes.

Usage: ``python course/build_exercises.py [SOURCE ...] [--out DIR]`` (default: every
``exercises/NN_*.py``, written under ``exercises/``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jupytext
import nbformat

REPO = Path(__file__).resolve().parents[1]

BEGIN_SOLUTION, END_SOLUTION = "# BEGIN SOLUTION", "# END SOLUTION"
BEGIN_ANSWER, END_ANSWER = "<!-- BEGIN ANSWER -->", "<!-- END ANSWER -->"
STUDENT_ANSWER, MODEL_ANSWER = "*Your answer:*", "*Model answer:*"
EXERCISE_HEADING = re.compile(r"^#+\s*Exercise\s+(\d+)\.(\d+)\b")
CHECK_CALL = re.compile(r"\bcheck_(close|equal|gradient|true)\s*\(")
MARKDOWN_LINK = re.compile(r"(\]\()([^)\s]+)")  # the target of [text](target) or ![alt](target)


def repository_url(pyproject: Path = REPO / "pyproject.toml") -> str | None:
    """The published repository's address, ``[project.urls] Repository`` in pyproject.toml, or
    None while the project is not published (no address is guessed)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    meta = tomllib.loads(pyproject.read_text())
    return meta.get("project", {}).get("urls", {}).get("Repository")


def colab_setup(url: str | None) -> str:
    """The first cell of a student notebook: on Colab, install minireformer from ``url`` (or,
    with no address configured, say how); elsewhere nothing."""
    if url:
        install = f'    %pip install --quiet "minireformer @ git+{url}"'
    else:
        install = (
            "    raise RuntimeError(\n"
            '        "minireformer is not installed here: run %pip install with the repository "\n'
            '        "address or the wheel your course gives, then run this notebook again"\n'
            "    )"
        )
    return (
        "# On Colab, install minireformer first (Binder and a local clone already have it).\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n' + install
    )


class ExerciseFormatError(ValueError):
    """A source that breaks the exercise format; the message names the file and the cell."""


def is_check_cell(cell) -> bool:
    """A code cell that calls one of the grading checks."""
    return cell.cell_type == "code" and bool(CHECK_CALL.search(cell.source))


def _regions(lines: list[str], begin: str, end: str, where: str):
    """Split ``lines`` into ``(False, line)`` outside regions and ``(True, indent, body)`` inside.

    A region is the lines strictly between a line ``begin`` and a line ``end`` (compared without
    surrounding whitespace); ``indent`` is the begin line's leading whitespace.
    """
    parts, body, indent = [], None, ""
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if marker == begin:
            if body is not None:
                raise ExerciseFormatError(f"{where}, line {number}: {begin!r} inside a region")
            body, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == end:
            if body is None:
                raise ExerciseFormatError(f"{where}, line {number}: {end!r} without {begin!r}")
            parts.append((True, indent, body))
            body = None
        elif body is None:
            parts.append((False, line))
        else:
            body.append(line)
    if body is not None:
        raise ExerciseFormatError(f"{where}: {begin!r} is never closed by {end!r}")
    return parts


def _has_marker(source: str, markers: tuple[str, ...]) -> bool:
    """Whether ``source`` mentions a marker anywhere (also commented out, as a misplaced one is)."""
    return any(marker in source for marker in markers)


def _code_versions(source: str, label: str | None, where: str) -> tuple[str, str]:
    """(student, solution) sources of a code cell."""
    parts = _regions(source.splitlines(), BEGIN_SOLUTION, END_SOLUTION, where)
    if any(part[0] for part in parts) and label is None:
        raise ExerciseFormatError(f"{where}: a solution with no '### Exercise N.M' heading above")
    student, solution = [], []
    for part in parts:
        if part[0]:
            _, indent, body = part
            student.append(f'{indent}raise NotImplementedError("{label}: write your code here")')
            solution.extend(body)
        else:
            student.append(part[1])
            solution.append(part[1])
    return "\n".join(student), "\n".join(solution)


def _one_folder_down(source: str) -> str:
    """Markdown whose relative links, written from ``exercises/``, work from a folder below it."""

    def rewrite(match: re.Match) -> str:
        target = match[2]
        relative = not (urlsplit(target).scheme or target.startswith(("#", "/")))
        return match[1] + ("../" + target if relative else target)

    return MARKDOWN_LINK.sub(rewrite, source)


def _markdown_versions(source: str, where: str) -> tuple[str, str]:
    """(student, solution) sources of a markdown cell, links rewritten for the built notebooks."""
    student, solution = [], []
    for part in _regions(_one_folder_down(source).splitlines(), BEGIN_ANSWER, END_ANSWER, where):
        if part[0]:
            student.append(STUDENT_ANSWER)
            solution.extend([MODEL_ANSWER, "", *part[2]])
        else:
            student.append(part[1])
            solution.append(part[1])
    return "\n".join(student), "\n".join(solution)


def _notebook(cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.cells = [nbformat.v4.new_code_cell(colab_setup(repository_url())), *cells]
    for number, cell in enumerate(nb.cells):
        cell.id = f"cell-{number}"
    return nb


def build(source: Path) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """The (student, solution) notebooks of one exercise source, unexecuted."""
    number = int(source.name[:2])
    student, solution = [], []
    label = None  # "Exercise N.M" of the latest exercise heading
    for index, cell in enumerate(jupytext.read(source).cells, start=1):
        where = f"{source.name}, cell {index}"
        if cell.cell_type == "markdown":
            if _has_marker(cell.source, (BEGIN_SOLUTION, END_SOLUTION)):
                raise ExerciseFormatError(f"{where}: solution markers in a markdown cell")
            heading = EXERCISE_HEADING.match(cell.source)
            if heading:
                if int(heading[1]) != number:
                    raise ExerciseFormatError(
                        f"{where}: 'Exercise {heading[1]}.{heading[2]}' in the exercises of "
                        f"notebook {number:02d}; number them {number}.1, {number}.2, ..."
                    )
                label = f"Exercise {heading[1]}.{heading[2]}"
            texts = _markdown_versions(cell.source, where)
            new_cell = nbformat.v4.new_markdown_cell
        elif cell.cell_type == "code":
            if _has_marker(cell.source, (BEGIN_ANSWER, END_ANSWER)):
                raise ExerciseFormatError(f"{where}: answer markers in a code cell")
            if is_check_cell(cell) and _has_marker(cell.source, (BEGIN_SOLUTION,)):
                raise ExerciseFormatError(f"{where}: a check cell holds a solution")
            texts = _code_versions(cell.source, label, where)
            new_cell = nbformat.v4.new_code_cell
        else:
            raise ExerciseFormatError(f"{where}: a {cell.cell_type} cell")
        student.append(new_cell(texts[0]))
        solution.append(new_cell(texts[1]))
    return _notebook(student), _notebook(solution)


def write(source: Path, out: Path) -> tuple[Path, Path]:
    """Build ``source`` into ``out/student/`` and ``out/solutions/``; return both paths."""
    paths = []
    for folder, nb in zip(("student", "solutions"), build(source)):
        path = out / folder / f"{source.stem}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=Path, help="default: exercises/NN_*.py")
    parser.add_argument("--out", type=Path, default=REPO / "exercises")
    args = parser.parse_args(argv)
    sources = args.sources or sorted((REPO / "exercises").glob("[0-9][0-9]_*.py"))
    if not sources:
        print("no exercises/NN_*.py sources found")
    for source in sources:
        student, solution = write(source, args.out)
        print(f"{source.name} -> {student}, {solution}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
