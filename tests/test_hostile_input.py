"""Input a careless or hostile user gives: one ``ferbench: error:`` line (exit 2) or the right answer, never a
traceback, a silently wrong record or a half-made folder (issue 33, items 3, 6, 7, 12 and 13)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferbench.cli import main
from fixtures_data import ck48, face


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


# 6. An image replaced by another of the same size, its mtime set back.


def _stored_png(path: Path, seed: int) -> int:
    """A PNG stored uncompressed: its size depends on its shape only, so two images are the same size."""
    ok, data = cv2.imencode(".png", face(seed), [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert ok
    path.write_bytes(data.tobytes())
    return path.stat().st_size


@pytest.mark.parametrize("how", ["in place", "renamed over it"])
def test_an_image_replaced_at_its_size_and_mtime_changes_the_fingerprint_and_the_pixels(tmp_path, monkeypatch, how):
    from ferbench.data.base import DATASETS
    from ferbench.data.preprocess import prepare_images

    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "digests"))
    root = ck48(tmp_path / "ck")
    image = next((root / "CK+48" / "anger").glob("*.png"))
    size = _stored_png(image, 1)
    first = DATASETS.get("ckplus")(root)
    assert prepare_images(first, 24, 1, cache_dir=tmp_path / "c").from_cache is False
    stamp = image.stat()
    time.sleep(0.02)  # past the kernel's clock tick, as any real replacement is
    if how == "in place":
        assert _stored_png(image, 99) == size
    else:
        assert _stored_png(tmp_path / "new.png", 99) == size
        os.replace(tmp_path / "new.png", image)
    os.utime(image, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # as touch -r, cp -p or rsync -t would
    assert image.stat().st_size == size and image.stat().st_mtime_ns == stamp.st_mtime_ns
    second = DATASETS.get("ckplus")(root)
    assert second.fingerprint != first.fingerprint
    assert prepare_images(second, 24, 1, cache_dir=tmp_path / "c").from_cache is False
    assert DATASETS.get("ckplus")(root).fingerprint == second.fingerprint  # unchanged since: the same id again


# 7. A phone photo's EXIF orientation: the pixels as the photo is meant to be seen, not sideways.


def _photo(path: Path, orientation: int) -> Path:
    """An asymmetric RGB picture (a bright corner, a colour per side) stored with an EXIF orientation tag."""
    from PIL import Image

    picture = np.zeros((12, 20, 3), dtype=np.uint8)
    picture[:3, :5] = 255
    picture[:, -2:, 0] = 200
    picture[-2:, :, 2] = 150
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(picture).save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(tmp_path, orientation):
    from PIL import Image, ImageOps

    from ferbench.data.images import read_image

    path = _photo(tmp_path / "photo.png", orientation)  # PNG: lossless, so pixel for pixel
    with Image.open(path) as im:
        seen = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(read_image(path), seen)


def test_a_sideways_jpeg_from_a_phone_is_read_upright(tmp_path):
    from ferbench.data.images import read_image

    image = read_image(_photo(tmp_path / "photo.jpg", 6))  # 6: the camera was turned a quarter clockwise
    assert image.shape == (20, 12, 3)
    assert image[:5, -3:].mean() > 200 and image[-5:, :3].mean() < 80  # the bright corner now top right
