"""Leakage report on known overlaps, and the data-set catalog over fixture trees."""

from __future__ import annotations

import numpy as np
import pytest

from ferbench.data import DATASETS
from ferbench.data.catalog import class_table, dataset_status, status_table
from ferbench.data.leakage import image_hashes, leakage_report, nearest_distance
from ferbench.data.preprocess import prepare_images
from ferbench.data.splits import Fold, subject_kfold_split
from fixtures_data import ck48, face, fer2013_folders, rafdb


def test_hashes_find_near_duplicates():
    base = np.stack([face(i, 48) for i in range(5)])
    noisy = np.clip(base.astype(int) + np.random.default_rng(0).integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    for method in ("dhash", "phash"):
        h, n = image_hashes(base, method), image_hashes(noisy, method)
        assert h.dtype == np.uint64
        assert (nearest_distance(n, h) <= 4).all()
        assert (nearest_distance(h[:1], h[1:]) > 8).all()
    assert nearest_distance(h[:2], h[:0]).tolist() == [65, 65]


def test_leakage_report_counts_overlaps(tmp_path):
    source = DATASETS.get("ckplus")(ck48(tmp_path))
    images = prepare_images(source, 48, 1, progress=False).images
    seq = source.samples["sequence"].to_numpy()
    test = np.flatnonzero(seq == "S010_004")[:1]  # one frame of a sequence whose other frames train
    train = np.setdiff1d(np.arange(len(source)), test)
    report = leakage_report(source, Fold(0, train, np.array([], int), test), images)
    assert (report.n_test, report.shared_subject, report.shared_sequence) == (1, 1, 1)
    assert report.near_duplicate == 0  # the fixture's frames are all different pictures
    dup = images.copy()
    dup[train[0]] = images[test[0]]
    assert leakage_report(source, Fold(0, train, np.array([], int), test), dup).exact_duplicate == 1
    folds = subject_kfold_split(source.samples, seed=0, k=3, val_ratio=0)
    assert all(leakage_report(source, f, images).shared_subject == 0 for f in folds)
    order = np.random.default_rng(0).permutation(len(source))
    fold = Fold(0, np.sort(order[4:]), np.array([], int), np.sort(order[:4]))
    shared = np.isin(seq[fold.test], seq[fold.train]).sum()  # test frames whose sequence has a training frame
    assert leakage_report(source, fold, images).as_dict()["shared_sequence_fraction"] == pytest.approx(shared / 4)


def test_leakage_without_subjects(tmp_path):
    source = DATASETS.get("rafdb")(rafdb(tmp_path))
    images = prepare_images(source, 32, 1, progress=False).images
    report = leakage_report(source, Fold(0, np.array([0, 1]), np.array([], int), np.array([2, 3])), images)
    assert report.shared_subject is None and report.shared_sequence is None and report.near_duplicate == 0


def test_catalog(tmp_path):
    ck48(tmp_path / "ckplus")
    fer2013_folders(tmp_path / "fer2013")
    statuses = {s.config: s for s in dataset_status(tmp_path)}
    assert statuses["ckplus"].present and statuses["ckplus"].n_images == 13
    assert statuses["ckplus6"].n_images == 10 and "contempt" not in statuses["ckplus6"].counts.index
    assert statuses["fer2013"].counts.loc["angry"].to_dict() == {"test": 1, "train": 2, "val": 1}
    assert not statuses["rafdb"].present and "list_patition_label.txt" in statuses["rafdb"].error
    assert statuses["synthetic"].present
    table = status_table(list(statuses.values()))
    assert {"config", "present", "images", "error"} <= set(table.columns)
    long = class_table(list(statuses.values()))
    assert long.query("config == 'fer2013'")["count"].sum() == 28


@pytest.mark.parametrize("garbage", [b"garbage", b"PK\x03\x04 not a zip", "npz", "float64", "short"])
def test_a_garbage_phash_cache_is_hashed_again_with_one_line(tmp_path, garbage, caplog):
    """A garbage ``.phash.npy`` raised a traceback and left a half-made run dir (issue 33, item 11)."""
    import logging

    from ferbench.data.leakage import cached_hashes

    prepared = prepare_images(DATASETS.get("ckplus")(ck48(tmp_path / "d")), 24, 1, cache_dir=tmp_path / "c")
    clean = cached_hashes(prepared.images, prepared.cache_path)
    path = prepared.cache_path.with_suffix(".phash.npy")
    if isinstance(garbage, bytes):
        path.write_bytes(garbage)
    elif garbage == "npz":  # np.load opens any file starting "PK" as an archive
        with open(path, "wb") as handle:
            np.savez(handle, hashes=clean)
    else:
        np.save(path, clean.astype(np.float64) if garbage == "float64" else clean[:-1])
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        assert np.array_equal(cached_hashes(prepared.images, prepared.cache_path), clean)
    assert len(caplog.records) == 1 and str(path) in caplog.text and "hashed again" in caplog.text
    assert np.array_equal(np.load(path), clean)  # written again


def test_an_image_cache_written_anew_drops_the_old_arrays_hashes(tmp_path):
    from ferbench.data.leakage import cached_hashes

    source = DATASETS.get("ckplus")(ck48(tmp_path / "d"))
    prepared = prepare_images(source, 24, 1, cache_dir=tmp_path / "c")
    cached_hashes(prepared.images, prepared.cache_path)
    np.save(prepared.cache_path, 255 - np.asarray(prepared.images))  # fails its digest: written anew
    assert not prepare_images(source, 24, 1, cache_dir=tmp_path / "c").from_cache
    assert not prepared.cache_path.with_suffix(".phash.npy").exists()
