"""``ferbench gallery``: the gallery page's numbers are the records' (CPU hours, epochs, folds, early stops, labels),
its claims table lists what was judged, and the committed page is what the command writes from its records."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from ferbench.errors import ConfigError
from ferbench.results import gallery_page as gp
from ferbench.results.cells import aggregate_cell
from ferbench.results.forest import VERDICT_STYLES, verdict_styles
from ferbench.results.gallery_manifest import Entry, Manifest, load_manifest
from ferbench.results.spec import load_spec
from ferbench.tables import CellPlan
from fixtures_records import write_record

REPO = Path(__file__).resolve().parents[1]
TABLE = {
    "paper": "paperx",
    "table": "t1",
    "title": "T1",
    "paper_scale": 1,
    "base": ["model=simplecnn"],
    "profiles": {"budget": []},
    "columns": [{"key": "c", "label": "C (subject 10-fold)"}, {"key": "d", "label": "D"}],
    "rows": [
        {"key": "base", "label": "Base", "paper": {"c": 0.9}},
        {"key": "new", "label": "New", "paper": {"c": 0.95}},
    ],
    "claims": [{"better": "new", "than": "base", "source": "Sec. 2"}],
}
SECONDS = {"base": [100.0, 200.0, 300.0, 400.0, 500.0], "new": [1000.0, 1100.0, 1200.0, 1300.0, 1400.0]}
EPOCHS = {"base": [6, 10, 10, 8, 10], "new": [10, 10, 10, 10, 10]}
BEST = {"base": [2, 9, 4, 5, 10], "new": [10, 3, 9, 10, 10]}
ACCURACY = {"base": [0.60, 0.62, 0.61, 0.63, 0.60], "new": [0.66, 0.68, 0.66, 0.69, 0.67]}


def _spec(tmp_path: Path):
    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(TABLE))
    return load_spec(path)


def _records(results: Path) -> None:
    for row in ("base", "new"):
        stopped = [e < 10 for e in EPOCHS[row]]
        columns = {
            "train_seconds": SECONDS[row],
            "epochs_run": EPOCHS[row],
            "best_epoch": BEST[row],
            "stopped_early": stopped,
            "batch_size": 8,
            "lr": 0.0001,
            "git_commit": "abcdef123456" if row == "base" else "1234567fedcb",
            "timestamp": [f"2026-12-05T0{k}:0{k}:00.5" for k in range(5)],
        }
        write_record(results, f"{row}-s0", ACCURACY[row], 0, split="subject_kfold", folds=True, columns=columns)


def _cells(spec, results: Path) -> list:
    cells = []
    for row in spec.rows:
        for column in spec.columns:
            run_ids = [f"{row.key}-s0"] if column.key == "c" else [f"{row.key}-d"]  # column d: never ran
            cells.append(aggregate_cell(CellPlan(row, column, "accuracy", "run", run_ids=run_ids), spec, results))
    return cells


def test_page_numbers_are_the_records_sums_counts_and_labels(tmp_path):
    spec, results = _spec(tmp_path), tmp_path / "gallery"
    _records(results)
    table = gp.RenderedTable(spec, _cells(spec, results), results)
    entry = Entry(dir=".", profile="budget", tables=(str(spec.path),), title="T", machine="a CPU")
    text = "\n".join(gp.table_section(entry, table))
    hours = (sum(SECONDS["base"]) + sum(SECONDS["new"])) / 3600
    # one column ran: 2 runs, seed 0, 5 folds each, batch 8; epochs 6-10 of 10; 2 folds stopped early, 8 at the cap,
    # 6 of those with their best epoch in the last two (base folds 1 and 4; new folds 0, 2, 3, 4)
    assert (
        f"| C (5-fold, subject) | 2 | 0 | 5 | 8 | 0.0001 | 6–10 / 10 | 2 / 8 (6) of 10 | {hours:.2f} | "
        "`abcdef1`, `1234567` | 2026-12-05 00:00–04:04 |" in text
    )
    base = np.array(ACCURACY["base"])
    assert f"| Base | C (5-fold, subject) | {base.mean():.4f} ± {base.std(ddof=1):.4f} | 0.9000 | " in text
    assert f"−{0.9 - base.mean():.4f} | 5 | 6–10 | 2 / 3 (2) |" in text
    assert "| New | C (5-fold, subject) |" in text and "| 5 | 10 | 0 / 5 (4) |" in text
    assert "subject 10-fold" not in text and "| D" not in text  # labels from what ran; column d did not
    # the claim in column c is judged and listed; the one in column d is not run and left out
    (claim,) = [line for line in text.splitlines() if line.startswith("| new > base")]
    diff = (np.array(ACCURACY["new"]) - base).mean() * 100
    # 8 of the 10 folds ran to the cap without early stopping: the verdict is provisional, the effect still shown
    assert claim.startswith(f"| new > base | C (5-fold, subject) | *provisional* | +{diff:.2f} pt |")
    assert "(1 of 2 claim × column checks" in text
    assert (results / "figures" / "paperx" / "t1-claims.png").stat().st_size > 0
    assert "](figures/paperx/t1-claims.png)" in text and "[table](tables/paperx/t1.md)" in text


def test_a_cell_run_in_two_folders_is_shown_side_by_side(tmp_path):
    spec = _spec(tmp_path)
    entries = []
    for folder in ("bf16", "fp32"):
        _records(tmp_path / folder)
        entry = Entry(dir=folder, profile="budget", tables=(str(spec.path),), title=folder, machine="M")
        table = gp.RenderedTable(spec, _cells(spec, tmp_path / folder), tmp_path / folder)
        entries.append(gp.RenderedEntry(entry, tmp_path / folder, [table]))
    manifest = Manifest(tmp_path / "gallery.yaml", tuple(e.entry for e in entries), home="results/gallery")
    lines = gp.across_lines(manifest, entries)
    base = np.array(ACCURACY["base"])
    ours = f"{base.mean():.4f} ± {base.std(ddof=1):.4f} (5)"
    assert "| table | row | column (as run) | `results/gallery/bf16` | `results/gallery/fp32` |" in lines
    assert f"| paperx/t1 | Base | C (5-fold, subject) | {ours} | {ours} |" in lines
    assert gp.across_lines(manifest, entries[:1]) == []


def test_gallery_command_writes_the_whole_page_from_records(tmp_path, capsys):
    spec = _spec(tmp_path)
    gallery = tmp_path / "gallery"
    _records(gallery / "ran")
    manifest = {
        "home": "results/gallery",
        "entries": [
            {"dir": "ran", "profile": "budget", "tables": [str(spec.path)], "title": "Ran here", "machine": "CPU X"},
            {"dir": "later", "profile": "converge", "tables": [str(spec.path)], "title": "Later", "machine": "?"},
        ],
    }
    (gallery / "gallery.yaml").write_text(yaml.safe_dump(manifest))
    calls = []

    def build(spec_, profile, extra, render_only, only):
        calls.append((profile, render_only, [e for e in extra if e.startswith("results_dir=")]))
        return SimpleNamespace(cells=_cells(spec_, gallery / "ran"))

    page = gp.gallery_command(["--manifest", str(gallery / "gallery.yaml"), "data_root=/nowhere"], build)
    assert calls == [("budget", True, [f"results_dir={gallery / 'ran'}"])]  # the folder without runs renders nothing
    text = page.read_text()
    assert page == gallery / "README.md" and "ferbench gallery" in capsys.readouterr().out
    assert text.startswith("# Results gallery") and "Generated by `ferbench gallery`" in text
    assert "Do not edit this page by hand" in text
    assert "## Ran here" in text and "Machine: CPU X" in text and "## Later" in text
    assert "2 runs, 10 folds: 2 stopped early (converged), 8 ran to their epoch cap" in text
    assert "| `results/gallery/later` | converge | 1 | 0 | — | — |" in text
    assert "python -m ferbench.results.gallery results/gallery-runs results/gallery/later" in text
    assert "](ran/figures/paperx/t1-claims.png)" in text
    assert str(tmp_path) not in text.replace(str(spec.path), "")  # only the table file named: not where the gallery is


def test_manifest_errors_name_the_file(tmp_path):
    path = tmp_path / "gallery.yaml"
    base = {"dir": ".", "profile": "budget", "tables": ["a/b"], "title": "T", "machine": "M"}
    for bad, message in [
        ({**base, "colour": 1}, "unknown key"),
        ({k: v for k, v in base.items() if k != "machine"}, "missing machine"),
        ({**base, "only": {"x/y": ["k"]}}, "only must map some of its tables"),
    ]:
        path.write_text(yaml.safe_dump({"entries": [bad]}))
        with pytest.raises(ConfigError, match=message) as info:
            load_manifest(path)
        assert "gallery.yaml" in str(info.value)
    path.write_text(
        yaml.safe_dump({"entries": [{**base, "only": ["k"], "overrides": ["trainer.precision=bf16-mixed"]}]})
    )
    (entry,) = load_manifest(path).entries
    assert entry.only == {"a/b": ("k",)} and entry.overrides == ("trainer.precision=bf16-mixed",)


def test_verdicts_are_opaque_strings_each_with_its_own_style():
    styles = verdict_styles(["inconclusive", "provisional", "a new verdict", "equivalent", "another"])
    assert (
        styles["provisional"] == VERDICT_STYLES["provisional"] and styles["equivalent"] == VERDICT_STYLES["equivalent"]
    )
    assert len(set(styles.values())) == 5


@pytest.mark.slow
def test_committed_gallery_page_is_what_ferbench_gallery_writes(tmp_path, shared_data):
    from ferbench.tables import build_table

    copy = tmp_path / "gallery"
    shutil.copytree(REPO / "results" / "gallery", copy)
    data = [f"data_root={shared_data}", f"data_dirs.ckplus={shared_data / 'ckplus48'}"]
    page = gp.gallery_command(["--manifest", str(copy / "gallery.yaml"), *data], build_table)
    committed = (REPO / "results" / "gallery" / "README.md").read_text()
    assert page.read_text() == committed, "results/gallery/README.md is stale: run `ferbench gallery` and commit it"
