"""``data=pasted_ckplus``: CK+'s real faces pasted at known boxes, the detection set of real expressions we hold."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ferbench.data import DATASETS
from ferbench.data.base import select_classes
from ferbench.data.boxes import face_boxes
from ferbench.errors import ConfigError
from fixtures_data import ck48


def _pasted(root, **options):
    return DATASETS.get("pasted")(root, source_options={"layout": "ck48"}, **options)


def test_each_face_is_pasted_exactly_where_its_box_says(tmp_path):
    faces = DATASETS.get("ckplus")(ck48(tmp_path), layout="ck48")
    pasted = _pasted(tmp_path, canvas=96)
    assert len(pasted) == len(faces) and pasted.pixels.shape == (len(faces), 96, 96)
    assert pasted.classes == faces.classes and list(pasted.samples["subject"]) == list(faces.samples["subject"])
    for i in range(len(pasted)):
        (box,) = pasted.boxes[i]
        x1, y1, x2, y2 = (int(round(v * 96)) for v in box)
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96 and x2 - x1 == y2 - y1  # square, inside the canvas
        assert 0.3 * 96 - 1 <= x2 - x1 <= 0.7 * 96 + 1
        expected = cv2.resize(faces.read_image(i), (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
        assert np.array_equal(pasted.pixels[i, y1:y2, x1:x2], expected)


def test_the_same_seed_gives_the_same_set_and_another_seed_another(tmp_path):
    ck48(tmp_path)
    a, b, c = _pasted(tmp_path, canvas=64), _pasted(tmp_path, canvas=64), _pasted(tmp_path, canvas=64, seed=1)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.pixels, b.pixels)
    assert c.fingerprint != a.fingerprint and not np.array_equal(c.pixels, a.pixels)
    assert _pasted(tmp_path, canvas=64, background="plain").fingerprint != a.fingerprint


def test_boxes_follow_dropped_classes_and_reach_the_detector(tmp_path):
    ck48(tmp_path)
    pasted = _pasted(tmp_path, canvas=64)
    kept = select_classes(pasted, ["contempt"])
    assert len(kept.boxes) == len(kept) == len(pasted) - 3
    rows = np.flatnonzero(pasted.samples["label"] != pasted.classes.index("contempt"))
    assert all(np.array_equal(kept.boxes[j], pasted.boxes[i]) for j, i in enumerate(rows))
    keep = np.ones(len(kept), dtype=bool)
    assert [b.tolist() for b in face_boxes(kept, keep).boxes] == [b.tolist() for b in kept.boxes]


@pytest.mark.parametrize(
    ("options", "match"),
    [({"min_scale": 0.8, "max_scale": 0.5}, "min_scale <= max_scale"), ({"background": "noise"}, "plain or texture")],
)
def test_bad_options_are_one_line(tmp_path, options, match):
    ck48(tmp_path)
    with pytest.raises(ConfigError, match=match):
        _pasted(tmp_path, **options)


def test_the_detector_trains_on_it_subject_independently(make_cfg, tmp_path):
    """Through the one runner: subject folds (no subject on both sides), exact boxes, detection metrics."""
    from ferbench.run import run

    cfg = make_cfg(
        "model=yoloxnano_det", "model.input_size=64", "data=pasted_ckplus", f"data_dirs.ckplus={ck48(tmp_path)}",
        "data.options.canvas=64", "split=subject_kfold", "split.k=2", "split.val_ratio=0", "aug=none",
        "trainer.batch_size=4", "trainer.max_epochs=1", "trainer.progress_bar=false", fast=False,
    )  # fmt: skip
    record = run(cfg)
    assert set(record.metrics["fold"]) == {0, 1} and record.metrics["map50"].between(0, 1).all()
    assert "no_face_box_whole_image" not in record.metrics["skipped"].iloc[0]  # exact boxes, no face finder
    assert record.metrics["data"].iloc[0] == "pasted_ckplus"
