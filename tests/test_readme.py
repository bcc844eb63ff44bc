"""The README's tables of the shipped models' results are what ``training/tables.py`` prints from
``results/*.json``: a number changed in one place and not the other fails here."""

from pathlib import Path

import pytest

from minireformer.training import tables

ROOT = Path(__file__).resolve().parents[1]
TABLES = tables.tables(ROOT / "results")


def test_every_results_file_has_a_table():
    assert {"shakespeare", "figure3", "duplication", "duplication_released"} <= set(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_readme_shows_the_table_printed_from_the_results(name):
    readme = (ROOT / "README.md").read_text()
    assert TABLES[name] in readme, (
        f"README.md does not show the {name} table of results/: paste the output of "
        f"`python -m minireformer.training.tables`:\n{TABLES[name]}"
    )
