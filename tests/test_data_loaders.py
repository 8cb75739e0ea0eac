"""Every loader on a tiny fixture in its published layout: counts, labels, subjects, official split."""

from __future__ import annotations

import numpy as np
import pytest

from ferbench.data import DATASETS
from ferbench.data.base import SAMPLE_COLUMNS, select_classes
from ferbench.data.ferplus import vote_labels
from fixtures_data import (
    FERPLUS_VOTES,
    ck48,
    ckplus_original,
    face,
    fer2013_csv,
    fer2013_folders,
    ferplus_csv,
    ferplus_folders,
    jaffe,
    rafd,
    rafdb,
    write,
)


def named(source, column="label"):
    return [source.classes[y] for y in source.samples[column]]


def test_every_loader_is_registered():
    assert {"fer2013", "ferplus", "rafdb", "ckplus", "jaffe", "rafd", "folder", "synthetic"} <= set(DATASETS.names())


def test_fer2013_csv(tmp_path):
    fer2013_csv(tmp_path, [(0, "Training"), (6, "Training"), (3, "PublicTest"), (4, "PrivateTest")])
    source = DATASETS.get("fer2013")(tmp_path)
    assert source.pixels.shape == (4, 48, 48) and source.pixels.dtype == np.uint8
    assert named(source) == ["angry", "neutral", "happy", "sad"]  # csv codes mapped onto the sorted names
    assert source.samples["official_split"].tolist() == ["train", "train", "val", "test"]
    np.testing.assert_array_equal(source.read_image(2), face(2))
    assert source.classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_fer2013_folders(tmp_path):
    expected = fer2013_folders(tmp_path)
    (tmp_path / "train" / "angry" / "Thumbs.db").write_bytes(b"x")
    source = DATASETS.get("fer2013")(tmp_path)
    assert source.samples["official_split"].value_counts().to_dict() == expected
    assert source.skipped == {"non_image_files": 1}
    assert source.class_counts().sum(axis=1).tolist() == [4] * 7
    assert DATASETS.get("fer2013")(tmp_path, layout="folders").fingerprint == source.fingerprint


def test_ferplus_csv_and_folders_agree(tmp_path):
    by_csv = DATASETS.get("ferplus")(ferplus_csv(tmp_path / "csv"))
    by_folders = DATASETS.get("ferplus")(ferplus_folders(tmp_path / "folders"))
    kept = [(n, e) for _, n, _, e in FERPLUS_VOTES if e in by_csv.classes]
    assert by_csv.samples["name"].tolist() == [n for n, _ in kept]
    assert named(by_csv) == [e for _, e in kept] == named(by_folders)
    assert by_csv.pixels is not None and len(by_csv.pixels) == len(kept)
    assert by_csv.samples["official_split"].tolist() == by_folders.samples["official_split"].tolist()
    assert by_csv.skipped == {
        "no_image_name": 1,
        "duplicate_name": 1,
        "no_majority": 2,
        "majority_unknown": 1,
        "majority_not_face": 1,
    }
    assert by_folders.skipped == {"no_majority": 2, "majority_unknown": 1, "majority_not_face": 1}
    seven = select_classes(by_folders, ["contempt"])
    assert len(seven.classes) == 7 and "contempt" not in named(seven) and seven.skipped["dropped_classes"] == 1


def test_ferplus_csv_pixels_follow_their_rows(tmp_path):
    source = DATASETS.get("ferplus")(ferplus_csv(tmp_path))
    for i, row in source.samples.iterrows():
        np.testing.assert_array_equal(source.pixels[i], face(int(row["row"])))


@pytest.mark.parametrize(
    ("votes", "majority", "plurality"),
    [
        ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], -1, -1),  # tie: dropped by both
        ([4, 3, 0, 0, 0, 0, 0, 0, 0, 0], 0, 0),  # 4 > 3.5
        ([4, 2, 2, 0, 0, 0, 0, 0, 0, 0], -1, 0),  # 4 of 8 is not more than half
        ([4, 1, 1, 1, 1, 1, 1, 0, 0, 0], 0, 0),  # single votes are outliers
        ([0, 0, 0, 0, 0, 0, 0, 0, 6, 4], -1, -1),  # unknown wins
    ],
)
def test_vote_rules(votes, majority, plurality):
    assert vote_labels(np.array([votes]), "majority")[0][0] == majority
    assert vote_labels(np.array([votes]), "plurality")[0][0] == plurality


def test_rafdb(tmp_path):
    source = DATASETS.get("rafdb")(rafdb(tmp_path))
    assert named(source) == ["sadness", "surprise", "neutral", "happiness"]  # labels 5, 1, 7, 4
    assert source.samples["official_split"].tolist() == ["train", "train", "test", "test"]
    assert source.read_image(0).shape == (100, 100, 3)


def test_ckplus_original(tmp_path):
    root = ckplus_original(tmp_path)
    source = DATASETS.get("ckplus")(root)
    assert named(source) == ["disgust"] * 3 + ["surprise"] * 3
    assert source.samples["sequence"].tolist() == ["S005_001"] * 3 + ["S010_004"] * 3
    assert source.samples["subject"].unique().tolist() == ["S005", "S010"]
    assert [p.rsplit("_", 1)[1] for p in source.samples["path"]] == ["00000003.png", "00000004.png", "00000005.png"] * 2
    assert source.skipped == {"unlabelled_sequences": 1}
    with_neutral = DATASETS.get("ckplus")(root, n_peak=1, first_frame_neutral=True)
    assert with_neutral.classes[0] == "neutral" and named(with_neutral) == ["neutral", "disgust", "neutral", "surprise"]


def test_ck48(tmp_path):
    source = DATASETS.get("ckplus")(ck48(tmp_path))
    assert source.classes == ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    assert len(source) == 13 and source.samples["subject"].nunique() == 3
    assert source.samples["sequence"].nunique() == 7
    assert source.samples["official_split"].isna().all()
    fewer = DATASETS.get("ckplus")(tmp_path, layout="ck48", n_peak=1)
    assert len(fewer) == 7 and fewer.skipped == {"frames_before_peak": 6}
    assert fewer.samples["frame"].tolist() == [19, 12, 1, 1, 1, 1, 10]


def test_jaffe(tmp_path):
    source = DATASETS.get("jaffe")(jaffe(tmp_path))
    assert sorted(named(source)) == sorted(["angry", "happy", "surprise", "neutral", "disgust", "fear", "sad"])
    assert sorted(source.samples["subject"].unique()) == ["KA", "KL", "NA", "YM"]
    assert source.skipped == {"non_image_files": 1}
    assert source.read_image(0).shape == (64, 64)


def test_rafd(tmp_path):
    root = rafd(tmp_path)
    source = DATASETS.get("rafd")(root)
    assert len(source) == 5 and len(source.classes) == 8
    assert dict(zip(source.samples["pose"], named(source), strict=True))[45] == "contemptuous"
    assert sorted(source.samples["subject"].unique()) == ["01", "02", "03"]
    frontal = DATASETS.get("rafd")(root, poses=[90], gazes=["frontal"])
    assert named(frontal) == ["angry"] and frontal.skipped == {"excluded_poses": 3, "excluded_gazes": 1}


def test_folder(tmp_path):
    for cls, n in (("b", 2), ("a", 3)):
        for i in range(n):
            write(tmp_path / "flat" / cls / f"{i}.png", face(i))
            write(tmp_path / "split" / "train" / cls / f"{i}.bmp", face(i))
        write(tmp_path / "split" / "test" / cls / "x.jpg", face(9))
    flat = DATASETS.get("folder")(tmp_path / "flat")
    assert flat.classes == ["a", "b"] and named(flat) == ["a"] * 3 + ["b"] * 2
    split = DATASETS.get("folder")(tmp_path / "split")
    assert split.samples["official_split"].value_counts().to_dict() == {"train": 5, "test": 2}


@pytest.mark.parametrize("build", [fer2013_folders, ferplus_folders, rafdb, ck48, jaffe, rafd])
def test_fingerprint_follows_files(tmp_path, build):
    build(tmp_path)
    name = {fer2013_folders: "fer2013", ferplus_folders: "ferplus", rafdb: "rafdb", ck48: "ckplus"}.get(
        build, build.__name__
    )
    before = DATASETS.get(name)(tmp_path)
    assert list(before.samples.columns[: len(SAMPLE_COLUMNS)]) == list(SAMPLE_COLUMNS)
    path = before.samples["path"].iloc[0]
    image = before.read_image(0)
    write(type(tmp_path)(path), 255 - image if image.ndim == 2 else (255 - image)[:, :, ::-1])
    assert DATASETS.get(name)(tmp_path).fingerprint != before.fingerprint


def test_ckplus_original_frames_are_always_face_cropped_ck48_is_not(tmp_path):
    """CK+'s original layout holds 640x490 camera frames: every CK+ cell must see faces, as with CK+48."""
    from ferbench.data.preprocess import prepare_images

    original = DATASETS.get("ckplus")(ckplus_original(tmp_path / "orig"))
    cropped = DATASETS.get("ckplus")(ck48(tmp_path / "ck48"))
    assert original.whole_frames and not cropped.whole_frames
    # the fixture's drawn faces are not found by the Haar cascade: the cropper ran and counted them
    prepared = prepare_images(original, 48, 1, face_crop=False, progress=False)
    assert prepared.skipped.get("no_face_kept_whole") == len(original)
    assert "no_face_kept_whole" not in prepare_images(cropped, 48, 1, face_crop=False, progress=False).skipped
