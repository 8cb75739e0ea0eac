"""Bad input, case by case: each raises DataError naming the file (and line) and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferbench.data import DATASETS
from ferbench.data.base import DataSource, sample_table
from ferbench.data.images import read_image
from ferbench.data.preprocess import prepare_images
from ferbench.errors import ConfigError, DataError
from fixtures_data import ck48, ckplus_original, face, fer2013_csv, fer2013_folders, ferplus_folders, rafdb, write


@pytest.mark.parametrize(
    ("name", "layout_words"),
    [
        ("fer2013", "fer2013.csv"),
        ("ferplus", "FER2013Train"),
        ("rafdb", "list_patition_label.txt"),
        ("ckplus", "cohn-kanade-images"),
        ("jaffe", "KA.AN1.39.tiff"),
        ("rafd", "Rafd090_01"),
        ("folder", "<class>"),
    ],
)
def test_missing_root_names_layout_and_path(tmp_path, name, layout_words):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        DATASETS.get(name)(missing)
    assert str(missing) in str(err.value) and layout_words in str(err.value)


def test_fer2013_missing_test_folder(tmp_path):
    write(tmp_path / "train" / "angry" / "Training_1.jpg", face(0))
    with pytest.raises(DataError, match="test"):
        DATASETS.get("fer2013")(tmp_path, layout="folders")


def test_unknown_layout_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="layout"):
        DATASETS.get("fer2013")(tmp_path, layout="parquet")


def _csv(tmp_path: Path, body: str) -> Path:
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + body)
    return tmp_path


def _pixels(n: int = 2304, value: str = "7") -> str:
    return " ".join([value] * n)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (f"0,{_pixels()},Training\n0,{_pixels(2303)},Training\n", r"fer2013.csv:3: pixels holds 2303 values"),
        (f"0,{_pixels()},Training\n9,{_pixels()},Training\n", r"fer2013.csv:3: unknown emotion 9"),
        (f"0,{_pixels()},Training,extra\n", r"fer2013.csv:2: expected 3 fields"),
        (f"0,{_pixels()},Holdout\n", r"fer2013.csv:2: unknown Usage"),
        (f"x,{_pixels()},Training\n", r"fer2013.csv:2: emotion 'x' is not an integer"),
        (f"0,{_pixels()},Training\n0,{_pixels(value='300')},Training\n", r"fer2013.csv:3: pixels must be"),
        (f"0,{_pixels(value='a')},Training\n", r"fer2013.csv:2: pixels must be integers"),
    ],
)
def test_malformed_fer2013_csv_names_the_line(tmp_path, body, match):
    with pytest.raises(DataError, match=match):
        DATASETS.get("fer2013")(_csv(tmp_path, body))


def test_ferplus_malformed_label_row(tmp_path):
    ferplus_folders(tmp_path)
    label = tmp_path / "FER2013Valid" / "label.csv"
    label.write_text(label.read_text() + 'fer0000006.png,"(0, 0, 48, 48)",1,2,3\n')
    with pytest.raises(DataError, match=r"FER2013Valid/label.csv:3: expected name, face box, 10 votes"):
        DATASETS.get("ferplus")(tmp_path)


def test_ferplus_negative_vote_and_missing_image(tmp_path):
    ferplus_folders(tmp_path)
    label = tmp_path / "FER2013Test" / "label.csv"
    good = label.read_text()
    label.write_text(good.replace("4,0,0,0,0,3,1,0,1,0", "4,0,0,0,0,3,-1,0,1,0"))
    with pytest.raises(DataError, match=r"FER2013Test/label.csv:1: vote counts must be non-negative"):
        DATASETS.get("ferplus")(tmp_path)
    label.write_text(good)
    (tmp_path / "FER2013Test" / "fer0000010.png").unlink()
    with pytest.raises(DataError, match=r"label.csv:2: image .*fer0000010.png is missing"):
        DATASETS.get("ferplus")(tmp_path)


def test_ferplus_csv_needs_row_aligned_pixels(tmp_path):
    from fixtures_data import ferplus_csv

    ferplus_csv(tmp_path)
    fer2013_csv(tmp_path, [(0, "Training")])
    with pytest.raises(DataError, match="row-aligned"):
        DATASETS.get("ferplus")(tmp_path)


def test_empty_class_folder(tmp_path):
    fer2013_folders(tmp_path)
    (tmp_path / "test" / "fear" / "PublicTest_2.jpg").unlink()
    (tmp_path / "test" / "fear" / "PrivateTest_2.jpg").unlink()
    with pytest.raises(DataError, match=r"empty class folder .*test/fear"):
        DATASETS.get("fer2013")(tmp_path)


def test_looping_and_dangling_links_are_counted_not_a_crash(tmp_path):
    """``ln -s b a; ln -s a b`` in a class folder (and the same with image names, and a class folder that is a
    dangling link): OSError 'Too many levels of symbolic links' before; now counted as broken links."""
    for name in ("happy", "sad"):
        for i in range(3):
            write(tmp_path / name / f"{i}.png", face(i))
    (tmp_path / "happy" / "a").symlink_to("b")
    (tmp_path / "happy" / "b").symlink_to("a")
    (tmp_path / "sad" / "c.png").symlink_to("d.png")
    (tmp_path / "sad" / "d.png").symlink_to("c.png")
    (tmp_path / "angry").symlink_to(tmp_path / "nowhere")
    source = DATASETS.get("folder")(tmp_path)
    assert len(source.samples) == 6 and source.classes == ["happy", "sad"]
    assert source.skipped["broken_links"] == 5


def test_unknown_class_folder(tmp_path):
    ck48(tmp_path)
    write(tmp_path / "CK+48" / "joy" / "S001_001_00000001.png", face(0))
    with pytest.raises(DataError, match=r"unknown class folder .*joy"):
        DATASETS.get("ckplus")(tmp_path)


def test_unknown_label_values(tmp_path):
    rafdb(tmp_path / "rafdb")
    labels = tmp_path / "rafdb" / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "test_0003.jpg 8\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt:5: unknown label '8'"):
        DATASETS.get("rafdb")(tmp_path / "rafdb")
    ckplus_original(tmp_path / "ck")
    (tmp_path / "ck" / "Emotion" / "S005" / "001" / "S005_001_00000005_emotion.txt").write_text("   9.0e+00\n")
    with pytest.raises(DataError, match=r"S005_001_00000005_emotion.txt:1: unknown emotion code"):
        DATASETS.get("ckplus")(tmp_path / "ck")
    write(tmp_path / "jaffe" / "KA.XX1.39.tiff", face(0))
    with pytest.raises(DataError, match=r"unknown JAFFE expression 'XX' in .*KA.XX1.39.tiff"):
        DATASETS.get("jaffe")(tmp_path / "jaffe")
    write(tmp_path / "rafd" / "Rafd090_01_Caucasian_female_bored_frontal.jpg", face(0))
    with pytest.raises(DataError, match=r"unknown RaFD emotion 'bored'"):
        DATASETS.get("rafd")(tmp_path / "rafd")


def test_bad_file_names(tmp_path):
    write(tmp_path / "ck" / "CK+48" / "anger" / "frame1.png", face(0))
    with pytest.raises(DataError, match=r"unexpected CK\+48 file name .*frame1.png"):
        DATASETS.get("ckplus")(tmp_path / "ck")
    write(tmp_path / "jaffe" / "KA_AN1.tiff", face(0))
    with pytest.raises(DataError, match=r"unexpected JAFFE file name .*KA_AN1.tiff"):
        DATASETS.get("jaffe")(tmp_path / "jaffe")


def _two_image_source(tmp_path: Path) -> tuple[DataSource, Path]:
    good = write(tmp_path / "good.png", face(0))
    bad = write(tmp_path / "bad.png", face(1))
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # truncated
    samples = sample_table([{"path": str(good), "label": 0}, {"path": str(bad), "label": 1}])
    return DataSource("two", ["a", "b"], samples, fingerprint="x"), bad


def test_corrupt_image_names_the_file(tmp_path):
    source, bad = _two_image_source(tmp_path)
    with pytest.raises(DataError, match=str(bad)):
        read_image(bad)
    with pytest.raises(DataError, match=str(bad)):
        prepare_images(source, 32, 1, progress=False)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="garbage.jpg"):
        read_image(garbage)


def test_skip_corrupt_counts(tmp_path):
    source, _ = _two_image_source(tmp_path)
    prepared = prepare_images(source, 32, 1, skip_corrupt=True, progress=False)
    assert prepared.images.shape == (1, 32, 32, 1)
    assert prepared.keep.tolist() == [True, False] and prepared.skipped == {"corrupt_images": 1}


def test_first_frame_neutral_needs_original_layout(tmp_path):
    ck48(tmp_path)
    with pytest.raises(ConfigError, match="first_frame_neutral"):
        DATASETS.get("ckplus")(tmp_path, first_frame_neutral=True)
