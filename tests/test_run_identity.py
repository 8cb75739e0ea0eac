"""A run's identity is its config *and* the data it loaded: other data never reuses a record, moved data does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ferbench.data import DATASETS
from ferbench.data.identity import data_fingerprint
from ferbench.records import record as rec
from ferbench.run import run
from fixtures_data import face, write

TINY = [
    "data=folder",
    "split=holdout",
    "split.ratio=0.3",
    "trainer.max_epochs=1",
    "trainer.batch_size=16",
    "trainer.progress_bar=false",
    "trainer.threads=1",
]


def folder_set(root: Path, offset: int, per_class: int = 8) -> Path:
    """A two-class ``<root>/<class>/*.png`` tree; ``offset`` picks different images (a different data set)."""
    for c, name in enumerate(("happy", "sad")):
        for i in range(per_class):
            write(root / name / f"{i}.png", face(offset + 100 * c + i))
    return root


def test_fingerprint_follows_the_data_not_its_location(tmp_path):
    a = folder_set(tmp_path / "a", offset=0)
    b = folder_set(tmp_path / "b", offset=1000)
    moved = tmp_path / "elsewhere" / "a"
    shutil.copytree(a, moved)  # copy2: sizes and mtimes kept, as by mv, cp -a or rsync -a
    load = DATASETS.get("folder")
    fa, fb, fm = (data_fingerprint(load(r), r) for r in (a, b, moved))
    assert fa != fb
    assert fa == fm
    write(moved / "sad" / "0.png", face(5000, size=40))  # one image replaced
    assert data_fingerprint(load(moved), moved) != fa
    copied = tmp_path / "copied" / "a"  # cp -r: new dates on every file, the same bytes (a fresh copy of the data)
    shutil.copytree(a, copied, copy_function=shutil.copyfile)
    assert {p.stat().st_mtime_ns for p in copied.rglob("*.png")}.isdisjoint(
        {p.stat().st_mtime_ns for p in a.rglob("*.png")}
    )
    assert data_fingerprint(load(copied), copied) == fa
    same_size = folder_set(tmp_path / "same_size", offset=0)  # one image's bytes changed, its size not
    target = same_size / "happy" / "0.png"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF
    target.write_bytes(bytes(data))
    assert data_fingerprint(load(same_size), same_size) != fa


def test_different_data_same_config_trains_twice_and_moved_data_reuses(make_cfg, tmp_path):
    a = folder_set(tmp_path / "data_a", offset=0)
    b = folder_set(tmp_path / "data_b", offset=1000)
    first = run(make_cfg(*TINY, f"data.root={a}", fast=False))
    other = run(make_cfg(*TINY, f"data.root={b}", fast=False))
    assert first.run_id != other.run_id
    assert not first.reused and not other.reused  # B was trained, not answered with A's numbers
    copy = tmp_path / "moved" / "data_a"
    shutil.copytree(a, copy)
    again = run(make_cfg(*TINY, f"data.root={copy}", fast=False))
    assert again.run_id == first.run_id and again.reused
    metrics = pd.read_csv(first.run_dir / "metrics.csv")
    assert metrics["data_fingerprint"].iloc[0] == data_fingerprint(DATASETS.get("folder")(a), a)


def test_run_id_takes_the_fingerprint(make_cfg):
    cfg = make_cfg()
    assert rec.run_id(cfg, "abc") == rec.run_id(cfg, "abc")
    assert rec.run_id(cfg, "abc") != rec.run_id(cfg, "abd")


def test_table_cells_on_other_data_get_other_run_ids(tmp_path):
    """Tables plan cells by run id without training: the id must see the data there too."""
    import yaml

    from ferbench.results.spec import load_spec
    from ferbench.tables import plan

    a = folder_set(tmp_path / "a", offset=0)
    folder_set(tmp_path / "b", offset=1000)
    shutil.copytree(a, tmp_path / "copy")
    body = {
        "paper": "paperx",
        "table": "t1",
        "base": ["model=simplecnn", "data=folder", "split=holdout"],
        "profiles": {"paper": [], "smoke": []},
        "columns": [{"key": k, "label": k, "overrides": [f"data.root={tmp_path / k}"]} for k in ("a", "b", "copy")],
        "rows": [{"key": "r", "label": "R", "overrides": ["model.drop_rate=0.0"]}],
    }
    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(body))
    ids = {cell.column.key: cell.run_ids for cell in plan(load_spec(path), "paper", [f"results_dir={tmp_path}"], [0])}
    assert ids["a"] != ids["b"] and ids["a"] == ids["copy"]


def test_fingerprint_reads_back_as_text_from_csv(tmp_path):
    """A hex digest like '3128397268e1' read back by pandas was a float: no fingerprint may parse as a number."""
    import pandas as pd
    import pytest

    from ferbench.data import DataSource
    from ferbench.data.identity import data_fingerprint

    for n in range(2000):
        samples = pd.DataFrame({"path": [f"{n}.png"], "label": [0], "subject": [""], "sequence": [""]})
        samples["official_split"] = None
        fingerprint = data_fingerprint(DataSource("t", ["a"], samples), None)
        with pytest.raises(ValueError):
            float(fingerprint)
    pd.DataFrame({"f": [fingerprint]}).to_csv(tmp_path / "m.csv", index=False)
    assert pd.read_csv(tmp_path / "m.csv")["f"].iloc[0] == fingerprint


def test_a_run_id_part_that_is_a_path_is_refused_before_anything_is_written(make_cfg, tmp_path):
    """``data.variant=x/../../../../outside_rd`` wrote a run record outside results_dir (issue 33, item 2)."""
    import pytest

    from ferbench.errors import ConfigError

    for bad in ("x/../../../../outside_rd", "..", "a b", "x\\y", ".hidden", "é"):
        with pytest.raises(ConfigError, match=r"data.variant=.* cannot be part of a run id .*no '/', no '\.\.'"):
            run(make_cfg(f"data.variant='{bad}'"))
    with pytest.raises(ConfigError, match="split.name"):
        rec.run_id(make_cfg("split.name=a/b"), "x")
    with pytest.raises(ConfigError, match="is not a run folder's name"):
        rec.run_dir(tmp_path, "../elsewhere")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert not [p for p in written if "outside_rd" in p or "runs" in p], written


def test_every_shipped_choice_stays_a_valid_run_id_part():
    """The sanitising changes no existing run id: every config group's name and data variant passes as it is."""
    import yaml

    from ferbench.paths import config_dir

    for path in Path(config_dir()).glob("*/*.yaml"):
        body = yaml.safe_load(path.read_text()) or {}
        for key in ("name", "variant"):
            if isinstance(body.get(key), str):
                assert rec.id_part(key, body[key]) == body[key], path


def test_a_boxes_csv_counts_by_its_contents_not_its_path(make_cfg, tmp_path):
    """``data.boxes`` (a detector's face boxes): edited in place it is other data, so another run; moved, the same."""
    first, moved = tmp_path / "a" / "boxes.csv", tmp_path / "b" / "renamed.csv"
    first.parent.mkdir()
    moved.parent.mkdir()
    first.write_text("name,x1,y1,x2,y2\nKA.AN1.39.tiff,10,10,90,90\n")
    shutil.copy(first, moved)

    def id_with(path: Path) -> str:
        return rec.run_id(make_cfg(f"++data.boxes={path}"), "data-abc")

    before = id_with(first)
    assert id_with(moved) == before
    first.write_text("name,x1,y1,x2,y2\nKA.AN1.39.tiff,12,10,90,90\n")
    assert id_with(first) != before
    assert rec.run_id(make_cfg(), "data-abc") != before  # and none differs from some
