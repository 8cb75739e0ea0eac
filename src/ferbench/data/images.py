"""Decoding image files into uint8 arrays, whatever their mode (palette, 16-bit, RGBA, grey)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ferbench.errors import DataError


def read_image(path: Path) -> np.ndarray:
    """uint8 HxW for grey files, HxWx3 RGB otherwise; a corrupt or truncated file names itself."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise DataError(f"image file not found: {path}")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        return _read_with_pil(path)
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"unsupported pixel type {image.dtype} in {path}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def _read_with_pil(path: Path) -> np.ndarray:
    """Fallback for formats OpenCV refuses (palette GIF, odd TIFF); returns uint8 grey or RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(im).astype(np.float64)
                return (wide / max(wide.max(), 1) * 255).round().astype(np.uint8)
            if im.mode not in ("L", "RGB"):
                im = im.convert("L" if im.mode in ("LA", "1") else "RGB")
            return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"corrupt or unreadable image: {path} ({exc})") from None
