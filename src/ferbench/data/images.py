"""Decoding image files into uint8 arrays, whatever their mode (palette, 16-bit, RGBA, grey).

OpenCV decodes the common cases (it expands palettes, keeps 16-bit depth, gives grey+alpha as BGRA);
Pillow is the fallback for what OpenCV refuses (GIF, odd TIFF) and for the error message of a broken file.
Alpha is composited onto black (RGB * alpha), so transparent regions never leak arbitrary colour values.
A photo's EXIF orientation (a phone turned sideways) is applied as Pillow's ``ImageOps.exif_transpose`` applies it:
``IMREAD_UNCHANGED``, which keeps 16-bit depth and alpha, is also the flag under which OpenCV ignores the tag.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ferbench.errors import DataError

cv2.utils.logging.setLogLevel(
    cv2.utils.logging.LOG_LEVEL_ERROR
)  # errors only: a corrupt file is reported once, by us, naming it (not libpng's [ WARN ] lines)


EXIF_ORIENTATION = 0x0112
UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # mirrored left to right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored top to bottom
    5: lambda a: a.swapaxes(0, 1),  # mirrored across the main diagonal
    6: lambda a: np.rot90(a, -1),  # the camera turned a quarter clockwise: turn the pixels back
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # mirrored across the other diagonal
    8: lambda a: np.rot90(a, 1),
}
"""EXIF orientation -> what makes the stored pixels upright (1, or no tag: they are)."""


def read_image(path: Path) -> np.ndarray:
    """uint8 HxW for grey files, HxWx3 RGB otherwise, upright as its EXIF orientation says; a corrupt or truncated
    file names itself."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise DataError(f"image file not found or unreadable: {path} ({exc.strerror})") from None
    image = _decode(data, path)
    upright = UPRIGHT.get(exif_orientation(data))
    return np.ascontiguousarray(upright(image)) if upright else image


def exif_orientation(data: np.ndarray) -> int:
    """The file's EXIF orientation tag (1 where it has none); Pillow reads only the header for it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a tag Pillow cannot parse is no orientation; decoding reports a broken file
        return 1


def _decode(data: np.ndarray, path: Path) -> np.ndarray:
    """The stored pixels, as OpenCV decodes them or (for what it refuses) Pillow."""
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        return _read_with_pil(path)
    if image.dtype == np.uint16:
        image = _from_16bit(image)
    elif image.dtype != np.uint8:
        raise DataError(f"unsupported pixel type {image.dtype} in {path}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(_composite(image), cv2.COLOR_BGR2RGB)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def _from_16bit(image: np.ndarray) -> np.ndarray:
    """Full 16-bit range onto 0..255 (65535 -> 255), the same scaling for every file: no contrast stretch."""
    return (image.astype(np.float32) / 257.0).round().astype(np.uint8)


def _composite(image: np.ndarray) -> np.ndarray:
    """H x W x 4 (colour + alpha, uint8) -> H x W x 3 on black."""
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    return (image[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)


def _read_with_pil(path: Path) -> np.ndarray:
    """Fallback for formats OpenCV refuses (palette GIF, odd TIFF); returns uint8 grey or RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16"):
                return _from_16bit(np.asarray(im).astype(np.uint16))
            if im.mode in ("I", "F"):
                wide = np.asarray(im).astype(np.float64)
                top = 65535.0 if wide.max(initial=0) <= 65535 and wide.min(initial=0) >= 0 else wide.max()
                return np.clip(wide / max(top, 1) * 255, 0, 255).round().astype(np.uint8)
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode in ("RGBA", "LA", "PA"):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                return np.ascontiguousarray(_composite(rgba))
            if im.mode not in ("L", "RGB"):
                im = im.convert("L" if im.mode == "1" else "RGB")
            return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt or unreadable image: {path} ({exc})") from None
