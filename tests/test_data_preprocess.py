"""Image modes, preprocessing steps and the on-disk cache (hit, invalidation, atomic files)."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import ferbench.data.images as images_module
from ferbench.data import DATASETS
from ferbench.data.base import DataSource, sample_table
from ferbench.data.images import read_image
from ferbench.data.preprocess import FaceCropper, equalize_histogram, prepare_images, to_channels
from fixtures_data import ck48, face, fer2013_csv, write

GREY = face(3, 16)


def _rgb() -> np.ndarray:
    return np.stack([GREY, 255 - GREY, GREY // 2], axis=2)


@pytest.mark.parametrize("suffix", [".png", ".gif", ".tiff", ".bmp"])
def test_palette_image_becomes_rgb(tmp_path, suffix):
    rgb = _rgb()
    pal = Image.fromarray(rgb).quantize(colors=256)
    pal.save(tmp_path / f"p{suffix}")
    expected = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / f"p{suffix}"), expected)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_16bit_grey_scales_full_range(tmp_path, suffix):
    wide = GREY.astype(np.uint16) * 257
    Image.fromarray(wide).save(tmp_path / f"w{suffix}")
    out = read_image(tmp_path / f"w{suffix}")
    assert out.dtype == np.uint8 and out.ndim == 2
    np.testing.assert_array_equal(out, GREY)  # no contrast stretch: 257 * v -> v


def test_16bit_rgb_png(tmp_path):
    bgr16 = _rgb()[:, :, ::-1].astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "c16.png"), bgr16)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png"), _rgb())


def test_rgba_composited_on_black(tmp_path):
    alpha = np.full(GREY.shape, 255, np.uint8)
    alpha[:, :8] = 0
    Image.fromarray(np.dstack([_rgb(), alpha]), "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[:, 8:], _rgb()[:, 8:])
    assert out[:, :8].max() == 0


def test_grey_alpha_and_bilevel(tmp_path):
    Image.fromarray(np.dstack([GREY, np.full_like(GREY, 255)]), "LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert to_channels(out, 1)[:, :, 0].tolist() == GREY.tolist()
    Image.fromarray(GREY > 128).save(tmp_path / "b.png")
    assert set(np.unique(read_image(tmp_path / "b.png"))) <= {0, 255}


def test_channel_conversion():
    rgb = _rgb()
    grey3 = to_channels(GREY, 3)
    assert grey3.shape == (16, 16, 3) and (grey3[:, :, 0] == grey3[:, :, 2]).all()
    np.testing.assert_array_equal(to_channels(rgb, 1)[:, :, 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_equalize_spreads_the_histogram():
    dull = (GREY // 4 + 100).astype(np.uint8)
    assert np.ptp(equalize_histogram(dull)) > np.ptp(dull)
    colour = equalize_histogram(np.dstack([dull, dull, dull]))
    assert colour.shape == (16, 16, 3) and np.ptp(colour) > np.ptp(dull)


def test_face_crop_miss_keeps_image_and_counts(tmp_path):
    fer2013_csv(tmp_path, [(0, "Training"), (1, "PrivateTest")])
    source = DATASETS.get("fer2013")(tmp_path)
    prepared = prepare_images(source, 32, 1, face_crop=True, equalize=True, progress=False)
    assert prepared.images.shape == (2, 32, 32, 1) and prepared.skipped == {"no_face_kept_whole": 2}
    assert FaceCropper()(np.zeros((64, 64), np.uint8)) is None


def _ck(tmp_path) -> DataSource:
    """The CK+48 fixture, written once per test and read afresh at each call."""
    root = tmp_path / "data"
    if not root.exists():
        ck48(root)
    return DATASETS.get("ckplus")(root)


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = prepare_images(_ck(tmp_path), 24, 3, cache_dir=cache, progress=False)
    assert not first.from_cache and first.cache_path.exists()
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temporary files left behind

    def boom(path):
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(images_module, "read_image", boom)
    second = prepare_images(_ck(tmp_path), 24, 3, cache_dir=cache, progress=False)
    assert second.from_cache and isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(second.images, first.images)
    assert second.keep.all() and second.skipped == first.skipped


def test_cache_keeps_mask_and_skips(tmp_path, monkeypatch):
    good = write(tmp_path / "good.png", face(0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    source = DataSource("two", ["a"], sample_table([{"path": str(good), "label": 0}, {"path": str(bad), "label": 0}]))
    source.fingerprint = "fixed"
    first = prepare_images(source, 8, 1, skip_corrupt=True, cache_dir=tmp_path / "c", progress=False)
    monkeypatch.setattr(images_module, "read_image", lambda p: (_ for _ in ()).throw(AssertionError(p)))
    again = prepare_images(source, 8, 1, skip_corrupt=True, cache_dir=tmp_path / "c", progress=False)
    assert again.from_cache and again.keep.tolist() == [True, False] and again.skipped == {"corrupt_images": 1}
    assert again.images.shape == first.images.shape == (1, 8, 8, 1)


def test_cache_invalidated_by_file_change_and_settings(tmp_path):
    cache = tmp_path / "cache"
    first = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    for settings in ({"size": 32}, {"channels": 3}, {"equalize": True}, {"skip_corrupt": True}):
        args = {"size": 24, "channels": 1, **settings}
        size, channels = args.pop("size"), args.pop("channels")
        other = prepare_images(_ck(tmp_path), size, channels, cache_dir=cache, progress=False, **args)
        assert not other.from_cache and other.cache_path != first.cache_path
    path = _ck(tmp_path).samples["path"].iloc[0]
    write(type(tmp_path)(path), 255 - face(1))
    changed = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    assert not changed.from_cache and changed.cache_path != first.cache_path
    assert not np.array_equal(changed.images[0], first.images[0])
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a touch leaves the bytes: the cache stays valid
    assert prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False).from_cache


def test_damaged_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    first = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    first.cache_path.write_bytes(b"garbage")
    again = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    assert not again.from_cache and np.load(again.cache_path).shape == (13, 24, 24, 1)


@pytest.mark.parametrize(
    "swap",
    ["zeros of another shape", "float64 x1000", "other pixels of the same shape"],
)
def test_a_cached_array_of_the_right_row_count_but_other_contents_is_rebuilt_with_one_line(tmp_path, swap, caplog):
    """Row count alone was trusted: zeros (N,32,32,1) or float64 x1000 were trained on (issue 33, item 5)."""
    cache = tmp_path / "cache"
    first = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    clean = np.array(first.images)
    n = len(clean)
    planted = {
        "zeros of another shape": np.zeros((n, 32, 32, 1), dtype=np.uint8),
        "float64 x1000": clean.astype(np.float64) * 1000,
        "other pixels of the same shape": 255 - clean,
    }[swap]
    np.save(first.cache_path, planted)
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        again = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    assert not again.from_cache and np.array_equal(again.images, clean)
    lines = [r.getMessage() for r in caplog.records if str(first.cache_path) in r.getMessage()]
    assert len(lines) == 1 and "rebuilt" in lines[0], caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        assert prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False).from_cache  # rebuilt, trusted
    assert not caplog.records


@pytest.mark.parametrize("meta", ["{}", "[1, 2]", '{"dropped": "x", "skipped": {}}'])
def test_a_cache_meta_that_is_not_ours_rebuilds_with_one_line(tmp_path, meta, caplog):
    """Cache meta JSON ``{}`` or ``[1,2]`` raised a KeyError/TypeError traceback (issue 33, item 11)."""
    cache = tmp_path / "cache"
    first = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    first.cache_path.with_suffix(".json").write_text(meta)
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        again = prepare_images(_ck(tmp_path), 24, 1, cache_dir=cache, progress=False)
    assert not again.from_cache and np.array_equal(again.images, first.images)
    assert len(caplog.records) == 1 and "unreadable" in caplog.text and "rebuilt" in caplog.text


@pytest.mark.parametrize("stored", ["[]", "3", '{"x": 1}'])
def test_a_digest_cache_that_is_not_a_mapping_is_read_as_empty(tmp_path, monkeypatch, stored):
    """A file-digest cache JSON ``[]`` raised AttributeError (issue 33, item 11): a cache, so it is rebuilt."""
    import hashlib

    from ferbench.data.base import file_digests

    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    image = write(tmp_path / "a" / "x.png", GREY)
    base = str(image.parent)
    store = tmp_path / "cache" / "file-digests" / f"{hashlib.sha1(base.encode()).hexdigest()[:16]}.json"
    store.parent.mkdir(parents=True)
    store.write_text(stored)
    digests = file_digests([str(image)], base)
    assert digests[str(image)] == hashlib.blake2b(image.read_bytes(), digest_size=16).hexdigest()
