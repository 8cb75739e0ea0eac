"""Claims in table files, verdicts rendered from records on disk, leakage per run and on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ferbench.cli import main
from ferbench.data.leakage import KEYS, LEAKAGE_FILE
from ferbench.errors import ConfigError
from ferbench.results.cells import aggregate_cell
from ferbench.results.render import write_table
from ferbench.results.report import claims_section, write_claims_page
from ferbench.results.spec import load_spec
from ferbench.run import run
from ferbench.tables import CellPlan
from ferbench.terminal import print_claims
from fixtures_data import ck48
from fixtures_records import write_record

TABLE = {
    "paper": "paperx",
    "table": "t1",
    "title": "T1",
    "metric": "accuracy",
    "paper_scale": 100,
    "columns": [{"key": "c", "label": "C"}],
    "rows": [{"key": "base", "label": "Base"}, {"key": "new", "label": "New"}],
    "claims": [{"better": "new", "than": "base", "source": "Sec. 2"}],
}


def _spec(tmp_path: Path, body: dict):
    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body))
    return load_spec(path)


def test_claims_parse_and_bad_ones_name_the_file(tmp_path):
    spec = _spec(tmp_path, TABLE)
    assert spec.claims[0].columns == ("c",) and spec.claims[0].label() == "new > base"
    for bad, message in [
        ({"better": "neww", "than": "base", "source": "x"}, "'neww' is not a row"),
        ({"better": "new", "than": "base"}, "source"),
        ({"better": "new", "than": "base", "source": "x", "columns": ["d"]}, "unknown columns"),
        ({"better": "new", "than": "base", "source": "x", "wrong": 1}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            _spec(tmp_path, {**TABLE, "claims": [bad]})
        assert "t1.yaml" in str(info.value)
    across = _spec(
        tmp_path,
        {
            **TABLE,
            "columns": [{"key": "c"}, {"key": "d"}],
            "claims": [{"better": "d", "than": "c", "rows": ["new"], "source": "ferbench"}],
        },
    )
    assert across.claims[0].across_columns and across.claims[0].rows == ("new",)


def _record(
    results: Path, run_id: str, accuracies: list[float], seed: int, leakage: dict | None = None, max_epochs: int = 10
) -> None:
    """A complete run on disk: metrics.csv per fold, folds.npz (the same test images per fold for every run); it
    stopped early at epoch 3 of ``max_epochs`` (converged), or ran to a cap of 3 (cut while improving)."""
    write_record(
        results, run_id, accuracies, seed, split="official", epochs=3, max_epochs=max_epochs, n_test=30,
        history=False, folds=True, leakage=leakage,
    )  # fmt: skip


def test_verdicts_and_leakage_render_under_the_table_and_in_the_reports(tmp_path, capsys):
    spec = _spec(tmp_path, TABLE)
    results = tmp_path / "results"
    leak = {
        "test_images": 30,
        "subject_overlap": 30,
        "sequence_overlap": 12,
        "exact_duplicates": 1,
        "near_duplicates": 5,
        "split": "official",
    }
    base = [0.60, 0.62, 0.61, 0.63, 0.60]
    for seed, b in enumerate(base):
        _record(results, f"base-s{seed}", [b], seed, leak)
        _record(results, f"new-s{seed}", [b + 0.05 + 0.002 * seed], seed, leak)
    cells = []
    for row in spec.rows:
        plan = CellPlan(row, spec.columns[0], "accuracy", "run", run_ids=[f"{row.key}-s{s}" for s in range(5)])
        cells.append(aggregate_cell(plan, spec, results))
    assert cells[1].pairs[0][:2] == (0, 0) and cells[1].leakage["subject_overlap"] == 150
    paths = write_table(spec, cells, "smoke", results / "tables")
    md = paths["md"].read_text()
    assert "**Claims**" in md and "*holds*" in md and "paired t" in md and "Sec. 2" in md
    assert "+5.40 pt" in md  # mean of 0.05 + 0.002 * (0..4), in points
    assert "150 test images: 150 share a subject" in md and "25 have a near-duplicate there (5 exact)" in md
    print_claims(paths["claims"])
    printed = capsys.readouterr().out
    assert "claims (1 holds):" in printed and "new > base (C; paper: Sec. 2): holds" in printed
    claims = pd.read_csv(results / "tables" / "paperx" / "t1.claims.csv")
    assert claims.loc[0, "verdict"] == "holds" and claims.loc[0, "n"] == 5
    section = "\n".join(claims_section(results, "paperx", ["t1"]))
    assert section.startswith("## Claims") and "1 holds" in section
    page = write_claims_page(results, [spec]).read_text()
    assert "| paperx | t1 | new > base | C | holds | +5.40 pt |" in page


def test_every_run_writes_leakage_json_and_hashes_once(make_cfg):
    cfg = make_cfg("split=kfold", "split.k=2")
    record = run(cfg)
    figures = json.loads((record.run_dir / LEAKAGE_FILE).read_text())
    assert set(KEYS) <= set(figures) and len(figures["folds"]) == 2
    n_samples = len(pd.read_csv(record.run_dir / "samples.csv.gz"))
    assert figures["test_images"] == sum(f["test_images"] for f in figures["folds"]) == n_samples
    cached = list(Path(cfg.cache_dir).glob("*.phash.npy"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    run(make_cfg("split=kfold", "split.k=3"))  # same data set, other split: the hashes are reused
    assert cached[0].stat().st_mtime_ns == stamp


def test_leakage_command_writes_the_named_keys(tmp_path, capsys):
    root = ck48(tmp_path / "ck")
    common = ["data=ckplus", f"data.root={root}", f"results_dir={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}"]
    out = tmp_path / "leak.json"
    main(["leakage", *common, "split=kfold", "split.k=2", "split.val_ratio=0", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert figures["test_images"] == 13
    assert figures["subject_overlap"] > 0 and figures["sequence_overlap"] > 0
    assert "subject overlap" in capsys.readouterr().out
    assert (tmp_path / "r" / "leakage" / "ckplus-kfold-s0.png").is_file()
    main(["leakage", *common, "split=subject_kfold", "split.k=3", "split.val_ratio=0", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert figures["test_images"] == 13 and figures["subject_overlap"] == 0 and figures["sequence_overlap"] == 0


def test_only_takes_a_row_column_cell(tmp_path, monkeypatch):
    """``--only baseline:ckplus_sot`` trains that one cell (the select-on-test measurement), not its row or column."""
    import ferbench.tables as tables

    spec = _spec(
        tmp_path,
        {**TABLE, "base": ["data=synthetic"], "profiles": {"smoke": []}, "columns": [{"key": "c"}, {"key": "d"}]},
    )
    trained: list[tuple[str, str]] = []
    monkeypatch.setattr(
        tables, "train_missing", lambda cells, _progress=None: trained.extend(c.key for c in cells) or {}
    )
    tables.build_table(spec, "smoke", [f"results_dir={tmp_path / 'r'}"], only=["new:d"])
    assert trained == [("new", "d")]


def test_leakage_note_says_subjects_unknown_in_words():
    """A data set without subjects read '12 test images: unknown share a subject with the training side'."""
    from ferbench.results.leakage import describe

    figures = {"test_images": 12, "near_duplicates": 2, "exact_duplicates": 1}
    unknown = describe({**figures, "subject_overlap": None, "sequence_overlap": None})
    assert unknown == "12 test images: subjects unknown, sequences unknown, 2 have a near-duplicate there (1 exact)"
    known = describe({**figures, "subject_overlap": 3, "sequence_overlap": 0})
    assert known.startswith("12 test images: 3 share a subject with the training side, 0 a sequence, 2 have")


def test_leakage_note_once_for_metric_columns_over_the_same_runs():
    """Table 6's accuracy, params and fps columns read the same runs: one leakage line, not three."""
    from types import SimpleNamespace

    from ferbench.results.render import leakage_notes

    figures = {"test_images": 5, "subject_overlap": 5, "sequence_overlap": 1, "near_duplicates": 0,
               "exact_duplicates": 0}  # fmt: skip
    cells = [
        SimpleNamespace(leakage=figures, column_label=column, row_label=row)
        for column in ("accuracy", "params", "fps")
        for row in ("base", "ours")
    ]
    (note,) = leakage_notes(cells)
    assert note.startswith("leakage, accuracy, params, fps: 5 test images: 5 share a subject")
    other = [*cells, SimpleNamespace(leakage={**figures, "subject_overlap": 0}, column_label="subject", row_label="x")]
    assert len(leakage_notes(other)) == 2


def _judged(tmp_path: Path, base: list[float], new: list[float], max_epochs: int = 10) -> pd.DataFrame:
    spec = _spec(tmp_path, TABLE)
    results = tmp_path / "results"
    for seed, (b, n) in enumerate(zip(base, new, strict=True)):
        _record(results, f"base-s{seed}", [b], seed, max_epochs=max_epochs)
        _record(results, f"new-s{seed}", [n], seed, max_epochs=max_epochs)
    cells = [
        aggregate_cell(CellPlan(r, spec.columns[0], "accuracy", "run", run_ids=[f"{r.key}-s{s}" for s in range(5)]),
                       spec, results)
        for r in spec.rows
    ]  # fmt: skip
    paths = write_table(spec, cells, "converge", results / "tables")
    return pd.read_csv(paths["claims"]), paths["md"].read_text()


def test_runs_cut_by_their_cap_give_provisional_claims_never_holds(tmp_path):
    base = [0.60, 0.62, 0.61, 0.63, 0.60]
    new = [b + 0.05 + 0.002 * k for k, b in enumerate(base)]
    claims, md = _judged(tmp_path, base, new, max_epochs=3)
    assert claims.loc[0, "verdict"] == "provisional"
    assert "5 of 5 folds cut by the 3-epoch cap while still improving" in claims.loc[0, "why_not"]
    assert "*provisional*" in md and "+5.40 pt" in md  # the effect is still shown
    converged, md = _judged(tmp_path / "b", base, new, max_epochs=10)
    assert converged.loc[0, "verdict"] == "holds" and "converged (every fold's early stopping fired" in md


def test_rows_that_tie_within_the_margin_are_equivalent(tmp_path):
    base = [0.60, 0.62, 0.61, 0.63, 0.60]
    noise = [0.001, -0.001, 0.0, 0.002, -0.002]
    claims, md = _judged(tmp_path, base, [b + d for b, d in zip(base, noise, strict=True)])
    assert claims.loc[0, "verdict"] == "equivalent" and claims.loc[0, "margin"] == pytest.approx(1.0)
    assert "equivalence (±1.00 pt)" in md
