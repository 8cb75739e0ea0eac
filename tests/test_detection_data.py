"""Boxes for detection (Haar / CSV, cached), box-aware mosaic and mix-up, paper 000's offline copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import fixtures_data as fx
from ferbench.data.boxes import face_boxes
from ferbench.data.copies import expand_copies, paper_copies_split
from ferbench.data.detection_transforms import DetectionDataset, MosaicMixup, build_box_augmentation, mosaic
from ferbench.data.folder import load_folder
from ferbench.errors import DataError


def marked(size: int, box: tuple[int, int, int, int], value: int) -> tuple[np.ndarray, np.ndarray]:
    """A zero image whose box (x1, y1, x2, y2) is filled with ``value``, and its (1, 5) target of class 0."""
    image = np.zeros((size, size, 1), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = value
    return image, np.array([[0, x1, y1, x2, y2]], dtype=np.float32)


def box_pixels(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The pixels inside each box, shrunk by 2 px (resampling blurs the edges)."""
    out = []
    for _, x1, y1, x2, y2 in target:
        out.append(image[int(y1) + 2 : int(y2) - 2, int(x1) + 2 : int(x2) - 2].ravel())
    return np.concatenate(out)


def test_mosaic_moves_boxes_with_their_pixels() -> None:
    values = (60, 120, 180, 240)
    items = [marked(64, (10, 12, 50, 56), v) for v in values]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        image, target = mosaic([i for i, _ in items], [t for _, t in items], rng, (0.5, 1.0))
        assert image.shape == (64, 64, 1) and len(target) >= 1
        for row in target:  # every kept box still covers one image's mark, whole and alone
            inside = box_pixels(image, row[None])
            assert inside.size and np.abs(inside.astype(int) - np.median(inside)).max() <= 2
            assert np.median(inside) in values
            assert (row[1:] >= 0).all() and (row[1:] <= 64).all()


def test_mixup_and_flip_keep_boxes_on_their_faces() -> None:
    images = np.stack([marked(64, (4, 4, 30, 40), 200)[0], marked(64, (30, 20, 60, 60), 200)[0]])
    targets = [marked(64, (4, 4, 30, 40), 200)[1], marked(64, (30, 20, 60, 60), 200)[1]]
    augment = build_box_augmentation([{"_target_": "albumentations.HorizontalFlip", "p": 0.5}])
    data = DetectionDataset(images, targets, np.arange(2), augment, MosaicMixup(mosaic=0.0, mixup=1.0))
    for seed in range(10):
        image, target = data[(0, seed)]
        assert len(target) == 2  # mix-up: the boxes of both images
        assert (box_pixels(image, target) >= 99).all()  # each box on (half of) its mark: 200 / 2


def test_csv_boxes_match_paths_and_count_images_without(tmp_path) -> None:
    csv = fx.pasted_faces(tmp_path, ("happy", "sad"), 3, size=64)
    table = pd.read_csv(csv)
    table.iloc[:-1].to_csv(csv, index=False)  # the last image loses its row
    source = load_folder(tmp_path / "images")
    keep = np.ones(len(source), dtype=bool)
    boxes = face_boxes(source, keep, tmp_path / "cache", csv)
    assert boxes.counts == {"no_box_in_csv": 1}
    by_name = {p.split("/")[-1]: r for p, r in zip(table["path"], table.itertuples(), strict=True)}
    for path, b in zip(source.samples["path"], boxes.boxes, strict=True):
        row = by_name[path.split("/")[-1]]
        if row.Index == len(table) - 1:
            assert b.shape == (0, 4)
        else:
            assert b[0] * 64 == pytest.approx([row.x1, row.y1, row.x2, row.y2])
    assert len(list((tmp_path / "cache").glob("boxes-*.json"))) == 1
    again = face_boxes(source, keep, tmp_path / "cache", csv)
    assert [b.tolist() for b in again.boxes] == [b.tolist() for b in boxes.boxes]
    with pytest.raises(DataError, match="lacks columns"):
        (tmp_path / "bad.csv").write_text("file,x,y\n")
        face_boxes(source, keep, None, tmp_path / "bad.csv")


def test_haar_boxes_count_images_without_a_face(tmp_path) -> None:
    fx.jaffe(tmp_path)  # random blobs: no face for the cascade
    from ferbench.data.jaffe import load_jaffe

    source = load_jaffe(tmp_path)
    boxes = face_boxes(source, np.ones(len(source), dtype=bool))
    assert boxes.counts["no_face_box_whole_image"] == len(source)
    assert all(b.tolist() == [[0.0, 0.0, 1.0, 1.0]] for b in boxes.boxes)


def test_haar_boxes_find_pasted_faces_in_jaffe_layout(tmp_path) -> None:
    from torchvision.ops import box_iou

    from ferbench.data.jaffe import load_jaffe

    pasted = fx.jaffe_faces(tmp_path, per_class=1)
    source = load_jaffe(tmp_path)
    boxes = face_boxes(source, np.ones(len(source), dtype=bool))
    ious = []
    for path, b in zip(source.samples["path"], boxes.boxes, strict=True):
        truth = torch.tensor([pasted[path.split("/")[-1]]], dtype=torch.float64)
        ious.append(float(box_iou(torch.from_numpy(b * 256), truth)[0, 0]))
    assert np.median(ious) >= 0.4, ious  # the cascade boxes the face inside the pasted square: ~0.53 measured


def test_paper_copies_move_boxes_and_leak_across_the_split() -> None:
    image, target = marked(32, (2, 4, 12, 20), 200)
    samples = pd.DataFrame({"path": [f"{i}.png" for i in range(10)], "label": [0, 1] * 5})
    images = np.repeat(image[None], 10, axis=0)
    labels = samples["label"].to_numpy()
    expanded, new_images, new_labels, new_targets = expand_copies(samples, images, labels, [target] * 10, 5, 0)
    assert len(expanded) == 50 and new_images.shape[0] == 50 and (new_labels == np.repeat(labels, 5)).all()
    for im, t in zip(new_images, new_targets, strict=True):
        assert (box_pixels(im, t) == 200).all()
    assert new_targets[1][0, 1:].tolist() == [20, 4, 30, 20]  # the mirror
    assert new_targets[2][0, 1:].tolist() == [2, 12, 12, 28]  # the flip
    (fold,) = paper_copies_split(expanded, seed=0, ratio=0.2, copies=5)
    train_of = set(expanded["copy_of"].to_numpy()[np.concatenate([fold.train, fold.val])])
    test_of = set(expanded["copy_of"].to_numpy()[fold.test])
    assert len(fold.test) == 10 and train_of & test_of  # the leak the paper's protocol has


def test_csv_boxes_take_find_style_paths_and_refuse_a_csv_matching_nothing(tmp_path) -> None:
    """``find .`` prints ``./happy/x.png``: those rows are the images' boxes; a CSV matching no image is an error."""
    csv = fx.pasted_faces(tmp_path, ("happy", "sad"), 2, size=64)
    table = pd.read_csv(csv)
    source = load_folder(tmp_path / "images")
    keep = np.ones(len(source), dtype=bool)
    table.assign(path="./" + table["path"]).to_csv(tmp_path / "dot.csv", index=False)
    boxes = face_boxes(source, keep, None, tmp_path / "dot.csv")
    assert boxes.counts == {"no_box_in_csv": 0} and all(b.shape == (1, 4) for b in boxes.boxes)
    table.assign(path="elsewhere/" + table["path"].str.replace("/", "_")).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(DataError, match=r"no row of .*none\.csv matches an image"):
        face_boxes(source, keep, None, tmp_path / "none.csv")


def test_csv_box_with_a_nan_coordinate_names_its_line(tmp_path) -> None:
    csv = fx.pasted_faces(tmp_path, ("happy",), 3, size=64)
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",nan"
    csv.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # a blank line before it: still line 4
    source = load_folder(tmp_path / "images")
    with pytest.raises(DataError, match=r"boxes\.csv line 4: expected a path and four finite numbers"):
        face_boxes(source, np.ones(len(source), dtype=bool), None, csv)
