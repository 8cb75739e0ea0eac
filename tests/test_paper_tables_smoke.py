"""CI's end-to-end check: one table per paper, smoke profile, rendered with every row and column.

Without ``../shared/data`` every cell trains on ``synthetic`` (marked †); with it, CK+/FER2013 cells use
the real data at smoke size. Either way each cell must read as a number, "cited" or "no data".
"""

from __future__ import annotations

import re

import pytest

from ferbench.results.spec import find_specs
from ferbench.tables import build_table

pytestmark = pytest.mark.e2e

ONE_TABLE_PER_PAPER = ["yoloxnano/table2", "lightvgg/table3", "amdcnn/table3", "shufflecsp/table2", "mnv3simam/table3"]
NUMBER = re.compile(r"^[0-9][0-9,.]*( ± [0-9.,]+)?†?( \(.+\))?$")
CELL = re.compile(r"^(cited: .+|no data.*|paper: .+|[0-9][0-9,.]*( ± [0-9.,]+)?†?( \(.+\))?)$")


def _body_cells(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    return header, rows


@pytest.mark.parametrize("name", ONE_TABLE_PER_PAPER)
def test_smoke_table_renders_every_row_and_column(name, tmp_path):
    (spec,) = find_specs(name)
    extra = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "trainer.progress_bar=false"]
    outcome = build_table(spec, "smoke", extra)
    assert not outcome.failures, outcome.failures
    header, rows = _body_cells(outcome.paths["md"].read_text())
    # a label naming a fold count says the count that ran: smoke caps every column at 2 folds
    assert header == [re.sub(r"\b\d+-fold\b", "2-fold", c.label) for c in spec.columns]
    assert [r[0] for r in rows] == [r.label for r in spec.rows]
    for row in rows:
        for cell in row[1:]:
            assert CELL.match(cell), f"{name}: unexpected cell {cell!r}"
    trained = {r.label for r in spec.rows if not r.cited}
    for row in rows:  # smoke substitutes synthetic faces for missing data: a row we run shows numbers, not "no data"
        if row[0] in trained:
            assert any(NUMBER.match(cell) for cell in row[1:]), f"{name}: row {row[0]!r} has no trained cell: {row}"
    for suffix in ("csv", "tex"):
        assert outcome.paths[suffix].is_file()
