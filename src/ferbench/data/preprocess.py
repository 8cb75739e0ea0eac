"""Turn a DataSource into one uint8 array N x H x W x C at the model's size and channel count.

Steps per image: decode -> optional Haar-cascade face crop (a miss keeps the whole image and is counted
as ``no_face_kept_whole``) -> optional histogram equalisation (lightvgg, paper 001) -> resize -> channels.
The result is cached as ``<cache_dir>/<key>.npy`` (memory-mapped when loaded again) beside
``<key>.json`` (dropped rows, skipped counts, settings, the array's digest: an entry whose shape, dtype or bytes
differ is rebuilt with one line); the key hashes the data set's name, files
(``fingerprint``), sample table and every setting, so a changed file or setting never reuses a stale array.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ferbench.data.base import DataSource
from ferbench.data.identity import table_digest
from ferbench.errors import DataError
from ferbench.records.atomic import check_writable, write_bytes, write_stream

MIN_IMAGE_SIDE = 16
"""Smaller images are kept (upscaled) but counted as ``tiny_images`` and warned about: likely not faces."""
SKIP_HINT = "add data.skip_corrupt=true to leave such files out (the run's skipped.csv names them)"
log = logging.getLogger("ferbench")

PREPROCESS_VERSION = 2
"""Bump when a change here alters the pixels, so every cached array is rebuilt (2: EXIF orientation applied)."""
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
_CHUNK = 256


@dataclass
class PreparedImages:
    images: np.ndarray
    """uint8, N x H x W x C, row i is the i-th *kept* sample of the source."""
    keep: np.ndarray
    """bool per source row: False where the image was skipped (corrupt, with ``skip_corrupt``)."""
    skipped: dict[str, int] = field(default_factory=dict)
    cache_path: Path | None = None
    """Where the array lives on disk, when cached."""
    from_cache: bool = False


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey <-> RGB as the model needs; always returns H x W x C."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.repeat(image, 3, axis=2)


def prepare_image(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    interpolation = cv2.INTER_AREA if image.shape[0] > size or image.shape[1] > size else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return to_channels(resized, channels)


def equalize_histogram(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation; colour images are equalised on luma only, so hues do not shift."""
    if image.ndim == 2:
        return cv2.equalizeHist(image)
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    ycrcb[:, :, 0] = cv2.equalizeHist(np.ascontiguousarray(ycrcb[:, :, 0]))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


class FaceCropper:
    """OpenCV's frontal-face Haar cascade (the Viola-Jones detector paper 001 uses); one per thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        if not self.path.is_file():
            raise DataError(f"OpenCV's face cascade is missing: {self.path}")

    def _cascade(self) -> cv2.CascadeClassifier:
        if not hasattr(self._local, "cascade"):
            self._local.cascade = cv2.CascadeClassifier(str(self.path))
        return self._local.cascade

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """The largest detected face, or None when there is none."""
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        side = min(grey.shape[:2])
        faces = self._cascade().detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(max(20, side // 5),) * 2
        )
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return image[y : y + h, x : x + w]


def cache_key(
    source: DataSource, size: int, channels: int, *, face_crop: bool, equalize: bool, skip_corrupt: bool
) -> str:
    """Hash of everything that decides the pixels: data set, its files, its rows, the settings, our version."""
    table_hash = table_digest(source.samples[["path", "label"]])
    settings = {
        "name": source.name,
        "fingerprint": source.fingerprint,
        "rows": table_hash,
        "n": len(source),
        "size": size,
        "channels": channels,
        "face_crop": face_crop,
        "equalize": equalize,
        "skip_corrupt": skip_corrupt,
        "version": PREPROCESS_VERSION,
    }
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    return f"{source.name}-{size}x{channels}-{digest}"


def array_digest(images: np.ndarray) -> str:
    """SHA-1 of the array's bytes, a block of rows at a time (a memory-mapped cache is never read whole)."""
    digest = hashlib.sha1()
    rows = max(1, (64 << 20) // max(1, images[:1].nbytes))  # about 64 MiB per update
    for start in range(0, len(images), rows):
        digest.update(np.ascontiguousarray(images[start : start + rows]).data)
    return digest.hexdigest()


def _load_cached(array_path: Path, meta_path: Path, n: int, size: int, channels: int) -> PreparedImages | None:
    """The cached array, when it is exactly what was written: its rows, shape, dtype and bytes' digest as its meta
    records them. A damaged, foreign or older entry (no digest) is rebuilt with one line; never trusted."""
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
        keep = np.ones(n, dtype=bool)
        keep[np.asarray(meta["dropped"], dtype=np.int64)] = False
        skipped = dict(meta["skipped"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("cached images %s unreadable (%s: %s); rebuilt", array_path, type(exc).__name__, exc)
        return None
    if problem := _cache_problem(images, meta, (int(keep.sum()), size, size, channels)):
        log.warning("cached images %s %s; rebuilt", array_path, problem)
        return None
    return PreparedImages(images, keep, skipped, array_path, from_cache=True)


def _cache_problem(images: np.ndarray, meta: dict, shape: tuple[int, ...]) -> str | None:
    """Why a cached array is not the one its meta describes, or None."""
    if images.shape != shape:
        return f"have shape {images.shape}, not {shape}"
    if images.dtype != np.uint8:
        return f"are {images.dtype}, not uint8"
    if "digest" not in meta:
        return "carry no digest (an older ferbench's cache)"
    if array_digest(images) != meta["digest"]:
        return "do not match the digest recorded when they were made"
    return None


def _progress(total: int, enabled: bool, description: str):
    """A rich progress bar for long decodes; a no-op otherwise."""
    if not enabled or total < 2000:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    return bar, bar.add_task(description, total=total)


def _reader(source: DataSource):
    """``source.read_image`` without a pandas lookup per image (it costs as much as the decode)."""
    if source.pixels is not None or "path" not in source.samples:
        return source.read_image
    from ferbench.data.images import read_image

    paths = source.samples["path"].tolist()
    return lambda i: read_image(paths[i])


def _warn_tiny(source: DataSource, tiny: list[tuple[int, tuple[int, ...]]], size: int) -> None:
    i, (h, w) = min(tiny)
    where = source.samples.at[i, "path"] if "path" in source.samples and source.samples.at[i, "path"] else f"row {i}"
    log.warning(
        "%d image(s) of %s smaller than %dx%d px, e.g. %s (%dx%d); upscaled to %dx%d: check the data",
        len(tiny),
        source.name,
        MIN_IMAGE_SIDE,
        MIN_IMAGE_SIDE,
        where,
        w,
        h,
        size,
        size,
    )


def prepare_images(
    source: DataSource,
    size: int,
    channels: int,
    *,
    face_crop: bool = False,
    equalize: bool = False,
    skip_corrupt: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> PreparedImages:
    """Decode, crop, equalise, resize and convert every image once; reuse the cached array when it exists.

    A source of whole camera frames (``whole_frames``) is face-cropped whatever ``face_crop`` says.
    """
    face_crop = face_crop or source.whole_frames
    settings = {"face_crop": face_crop, "equalize": equalize, "skip_corrupt": skip_corrupt}
    array_path = meta_path = None
    if cache_dir is not None:
        key = cache_key(source, size, channels, **settings)
        array_path, meta_path = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        cached = _load_cached(array_path, meta_path, len(source), size, channels)
        if cached is not None:
            return cached
        check_writable(Path(cache_dir), "the image cache (cache_dir)")  # before decoding, not after

    out = np.empty((len(source), size, size, channels), dtype=np.uint8)
    keep = np.ones(len(source), dtype=bool)
    cropper = FaceCropper() if face_crop else None
    read = _reader(source)
    do_equalize = equalize

    tiny: list[tuple[int, tuple[int, ...]]] = []

    def work(start: int) -> Counter:
        counts: Counter = Counter()
        for i in range(start, min(start + _CHUNK, len(source))):
            try:
                image = read(i)
            except DataError as exc:
                if not skip_corrupt:
                    raise DataError(f"{exc}; {SKIP_HINT}") from None
                keep[i] = False
                counts["corrupt_images"] += 1
                continue
            if min(image.shape[:2]) < MIN_IMAGE_SIDE:
                counts["tiny_images"] += 1
                tiny.append((i, image.shape[:2]))
            if cropper is not None:
                face = cropper(image)
                if face is None:
                    counts["no_face_kept_whole"] += 1
                else:
                    image = face
            if do_equalize:
                image = equalize_histogram(image)
            out[i] = prepare_image(image, size, channels)
        return counts

    skipped: Counter = Counter()
    starts = range(0, len(source), _CHUNK)
    bar = _progress(len(source), progress, f"preparing {source.name}")
    workers = min(8, os.cpu_count() or 1) if source.pixels is None or face_crop else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if bar is not None:
            bar[0].start()
        try:
            for start, counts in zip(starts, pool.map(work, starts), strict=True):
                skipped.update(counts)
                if bar is not None:
                    bar[0].update(bar[1], completed=min(start + _CHUNK, len(source)))
        finally:
            if bar is not None:
                bar[0].stop()
    result = PreparedImages(np.ascontiguousarray(out[keep]), keep, dict(skipped))
    if tiny:
        _warn_tiny(source, tiny, size)

    if array_path is not None:
        array_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "dropped": np.flatnonzero(~keep).tolist(),
            "skipped": result.skipped,
            "source": source.name,
            "fingerprint": source.fingerprint,
            "size": size,
            "channels": channels,
            **settings,
            "version": PREPROCESS_VERSION,
            "digest": array_digest(result.images),
        }
        array_path.with_suffix(".phash.npy").unlink(missing_ok=True)  # the old array's hashes (data.leakage)
        write_stream(array_path, lambda handle: np.save(handle, result.images))
        write_bytes(meta_path, json.dumps(meta, indent=1).encode())
        result.cache_path = array_path
    return result
