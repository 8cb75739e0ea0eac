"""The real data copies in ``../shared/data`` (slow; skipped where they are absent)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from ferbench.data import DATASETS
from ferbench.data.ferplus import VOTE_COLUMNS, read_fer2013new, vote_labels
from ferbench.data.leakage import image_hashes, leakage_report
from ferbench.data.preprocess import prepare_images
from ferbench.data.splits import holdout_split, subject_kfold_split
from fixtures_data import SHARED_DATA

pytestmark = pytest.mark.slow


def need(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    return path


def test_ckplus48_counts():
    source = DATASETS.get("ckplus")(need("ckplus48"))
    counts = source.class_counts()["all"].to_dict()
    assert counts == {
        "anger": 135,
        "contempt": 54,
        "disgust": 177,
        "fear": 75,
        "happy": 207,
        "sadness": 84,
        "surprise": 249,
    }
    assert len(source) == 981 and source.skipped == {}
    assert source.samples["subject"].nunique() == 118 and source.samples["sequence"].nunique() == 327
    assert (source.samples.groupby("sequence").size() == 3).all()


def test_fer2013_folders_counts():
    source = DATASETS.get("fer2013")(need("fer2013"))
    counts = source.class_counts()
    assert counts.sum().to_dict() == {"train": 28709, "val": 3589, "test": 3589}
    assert counts["train"].tolist() == [3995, 436, 4097, 7215, 4965, 4830, 3171]


def test_ferplus_folders_agree_with_fer2013new():
    root = need("ferplus")
    source = DATASETS.get("ferplus")(root)
    counts = source.class_counts()[["train", "val", "test"]]
    print("\nFERPlus majority vote, folders layout:\n", counts, "\nskipped:", source.skipped)
    # the votes of fer2013new.csv (names given, first occurrence) give the same labels as the folders' label.csv
    entries = read_fer2013new(root / "fer2013new.csv")
    frame = pd.DataFrame([(u, n, *v) for _, u, n, v in entries], columns=["split", "name", *VOTE_COLUMNS])
    assert (frame["name"] == "").sum() == 173
    named = frame[frame["name"] != ""]
    assert named["name"].duplicated().sum() == 4
    named = named.drop_duplicates("name")
    assert (named[VOTE_COLUMNS].sum(axis=1) != 10).sum() == 1  # the 9-vote row
    assert named.groupby("split").size().to_dict() == {"train": 28558, "val": 3579, "test": 3573}
    assert counts.to_numpy().sum() + sum(source.skipped.values()) == 28558 + 3579 + 3573
    # The folders' label.csv come from an older revision of FERPlus's votes than the fer2013new.csv here:
    # same 35,710 names and splits, but 1,601 rows' votes differ; the labels must still agree almost everywhere.
    label, _ = vote_labels(named[VOTE_COLUMNS].to_numpy(), "majority")
    from_csv = pd.Series(label, index=named["name"].to_numpy())
    from_folders = pd.Series(source.samples["label"].to_numpy(), index=source.samples["name"].to_numpy())
    both = from_csv.reindex(from_folders.index)
    disagree = int((both != from_folders).sum())
    print(f"labels from fer2013new.csv vs label.csv: {disagree} of {len(from_folders)} kept images differ")
    assert set(named["name"]) >= set(from_folders.index)
    assert disagree < 0.01 * len(from_folders)


def read_names(root):
    return {n for _, _, n, _ in read_fer2013new(root / "fer2013new.csv") if n}


def test_ferplus_csv_layout_on_the_real_votes(tmp_path):
    """fer2013.csv is not here: stand-in pixels (zeros) row-aligned with the real fer2013new.csv."""
    root = need("ferplus")
    entries = read_fer2013new(root / "fer2013new.csv")
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    zeros = " ".join(["0"] * 2304)
    (tmp_path / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n" + "".join(f"0,{zeros},{usage[u]}\n" for _, u, _, _ in entries)
    )
    (tmp_path / "fer2013new.csv").symlink_to(root / "fer2013new.csv")
    by_csv = DATASETS.get("ferplus")(tmp_path, layout="csv")
    by_folders = DATASETS.get("ferplus")(root)
    print("\nFERPlus majority vote, csv layout (fer2013new.csv):\n", by_csv.class_counts(), "\n", by_csv.skipped)
    diff = (by_csv.class_counts() - by_folders.class_counts()).abs().to_numpy()
    assert diff.sum() < 0.01 * len(by_folders)  # older votes in label.csv: see the test above
    assert set(by_csv.samples["name"]) <= set(by_folders.samples["name"]) | set(read_names(root))
    assert by_csv.skipped["no_image_name"] == 173 and by_csv.skipped["duplicate_name"] == 4
    assert len(by_csv.pixels) == len(by_csv)


def test_leakage_on_ckplus48(tmp_path):
    source = DATASETS.get("ckplus")(need("ckplus48"))
    prepared = prepare_images(source, 48, 1, cache_dir=tmp_path, progress=False)
    hashes = image_hashes(np.asarray(prepared.images))
    start = time.perf_counter()
    holdout = leakage_report(source, holdout_split(source.samples, seed=0, ratio=0.1)[0], hashes=hashes)
    folds = subject_kfold_split(source.samples, seed=0, k=10)
    subject = [leakage_report(source, f, hashes=hashes) for f in folds]
    elapsed = time.perf_counter() - start
    print("\nholdout 90/10:", holdout.as_dict())
    keys = ("n_test", "shared_subject", "shared_sequence", "near_duplicate", "exact_duplicate")
    print("subject_kfold (sum over 10 folds):", {k: sum(getattr(r, k) for r in subject) for k in keys})
    assert holdout.shared_sequence > 0.8 * holdout.n_test and holdout.near_duplicate > 0.5 * holdout.n_test
    assert all(r.shared_subject == 0 and r.shared_sequence == 0 for r in subject)
    assert sum(r.near_duplicate for r in subject) < 0.05 * len(source)  # pHash: few false matches across people
    print(f"leakage reports, 11 splits: {elapsed:.2f} s")  # a benchmark figure, not a pass mark (a shared CPU varies)


def test_fer2013_cache_and_leakage(tmp_path):
    source = DATASETS.get("fer2013")(need("fer2013"))
    start = time.perf_counter()
    first = prepare_images(source, 48, 1, cache_dir=tmp_path, progress=False)
    decode = time.perf_counter() - start
    start = time.perf_counter()
    again = prepare_images(source, 48, 1, cache_dir=tmp_path, progress=False)
    cached = time.perf_counter() - start
    print(f"\nFER2013 48x48x1: decode {decode:.1f} s, cached load {cached:.3f} s")
    assert again.from_cache  # cached load time is printed above: a benchmark figure, not a pass mark
    start = time.perf_counter()
    from ferbench.data.splits import official_split

    report = leakage_report(source, official_split(source.samples, seed=0)[0], np.asarray(first.images))
    print("FER2013 official split:", report.as_dict(), f"({time.perf_counter() - start:.1f} s)")
    assert report.shared_subject is None and report.near_duplicate > 0
