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


# 13. Nothing half-made after an error: no run folder without a fold, no empty results dir.

THREADS = "trainer.threads=1"


def test_a_model_init_error_fails_before_the_run_folder(make_cfg):
    from ferbench.errors import ConfigError
    from ferbench.run import run

    cfg = make_cfg("model.init=no-such-run", THREADS)
    with pytest.raises(ConfigError, match="neither a file nor a run"):
        run(cfg)
    assert not list((Path(cfg.results_dir) / "runs").glob("*"))


def test_an_error_before_any_fold_removes_the_folder_it_made_and_keeps_one_that_was_there(make_cfg, monkeypatch):
    import ferbench.run as run_module
    from ferbench.errors import DataError
    from ferbench.records import record as rec

    def broken(*args, **kwargs):
        raise DataError("a cache went bad")

    monkeypatch.setattr(run_module, "write_run_leakage", broken)
    cfg = make_cfg(THREADS)
    with pytest.raises(DataError):
        run_module.run(cfg)
    assert not list((Path(cfg.results_dir) / "runs").glob("*"))
    kept = rec.run_dir(cfg.results_dir, run_module.rec.run_id(cfg, _fingerprint(cfg)))
    (kept / "fold_0").mkdir(parents=True)  # a fold from an earlier attempt: never removed
    with pytest.raises(DataError):
        run_module.run(cfg)
    assert (kept / "fold_0").is_dir()


def _fingerprint(cfg) -> str:
    from ferbench.data.identity import fingerprint_of

    return fingerprint_of(cfg)


def test_the_low_space_check_leaves_no_empty_results_dir(tmp_path, monkeypatch):
    import collections
    import shutil

    from ferbench.errors import FerbenchError
    from ferbench.records.run_folder import ensure_writable

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 10 * 2**20, 10 * 2**20))
    (tmp_path / "there").mkdir()
    with pytest.raises(FerbenchError, match="only 10 MiB free"):
        ensure_writable(tmp_path / "there" / "results" / "runs" / "x")
    assert list(tmp_path.rglob("*")) == [tmp_path / "there"]
