"""Contact sheets: a grid of images as one PNG, for people who would rather look than read."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np

from .files import atomic_write_bytes


def contact_sheet(
    images: Sequence[np.ndarray], cols: int | None = None, cell: int = 96, pad: int = 2,
    background: int = 255,
) -> np.ndarray:
    """Tile RGB uint8 images into one RGB array, each letterboxed into a `cell`-pixel square."""
    n = len(images)
    if n == 0:
        return np.full((cell, cell, 3), background, np.uint8)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.full((rows * (cell + pad) + pad, cols * (cell + pad) + pad, 3), background, np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = cell / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        tile = cv2.resize(img, (nw, nh), interpolation=interp)
        r, c = divmod(i, cols)
        y = pad + r * (cell + pad) + (cell - nh) // 2
        x = pad + c * (cell + pad) + (cell - nw) // 2
        sheet[y : y + nh, x : x + nw] = tile
    return sheet


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB uint8 array as PNG, atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a {image.shape} array as PNG")
    atomic_write_bytes(path, buf.tobytes())
