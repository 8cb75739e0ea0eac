"""Input a careless or hostile user gives: one ``ferbench: error:`` line (exit 2) or the right answer, never a
traceback, a silently wrong record or a half-made folder (issue 33, items 3, 6, 7, 12 and 13)."""

from __future__ import annotations

import pytest

from ferbench.cli import main
from fixtures_data import ck48


def _fails_with_one_line(argv: list[str], capsys) -> str:
    """The one stderr line of a command that must exit 2."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1, lines
    return lines[0]


# 12. ``ferbench leakage --out <folder>`` / ``--grid <folder>``.


@pytest.mark.parametrize(("flag", "example"), [("--out", "leakage.json"), ("--grid", "ckplus-official-s0.png")])
def test_leakage_output_given_a_folder_is_one_line_before_the_scan(tmp_path, capsys, monkeypatch, flag, example):
    import ferbench.leakage_scan as leakage_scan

    monkeypatch.setattr(leakage_scan, "scan", lambda cfg: pytest.fail("scanned before checking its outputs"))
    folder = tmp_path / "out"
    folder.mkdir()
    common = [f"data.root={ck48(tmp_path / 'ck')}", f"results_dir={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}"]
    line = _fails_with_one_line(["leakage", "data=ckplus", *common, flag, str(folder)], capsys)
    expected = f"{flag} {folder}: a folder, not a file; give a file's name, e.g. {folder / example}"
    assert line == f"ferbench: error: {expected}"
