"""Image hygiene shared by the stages: checking a body before it is trusted, and decoding it
the right way up as RGB whatever its mode.

Order matters: the cheap checks (declared type, magic bytes, header dimensions against the
pixel cap) come before the full decode, so a decompression bomb is refused from its header.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RASTER = {"jpeg", "png", "webp", "gif", "tiff"}
# Transparency is composited over this background before anything looks at the pixels (hashing,
# detection, storage): dropping the alpha channel blanks images whose picture lives in it. Mid grey,
# not white or black: a white logo on transparency (RGB all white) and a black one both stay visible.
ALPHA_BACKGROUND = (128, 128, 128)
ALPHA_NOTE = "transparency composited over #808080"


def centre_square(img: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of `img` at size x size: cropped first, then resized once (the
    aspect exact, the fewest pixels filtered), with the area filter when shrinking (no aliasing) and
    cubic when enlarging. How LSUN import stores a picture and how training reads one."""
    h, w = img.shape[:2]
    if h == w == size:  # training's usual case, per item: as it is
        return img
    import cv2  # here, not above: the scraper checks images without OpenCV

    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    img = np.ascontiguousarray(img[y : y + side, x : x + side])
    if side != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)
    return img


def has_alpha(im: Image.Image) -> bool:
    """Whether a (not yet converted) PIL image carries transparency."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def composite_alpha(image: np.ndarray | Image.Image,
                    background: tuple[int, int, int] = ALPHA_BACKGROUND) -> np.ndarray:
    """An RGB uint8 HxWx3 array of an image with transparency (an RGBA or LA array, or any PIL
    image) laid over `background`. The one place every stage flattens transparency."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGBA"))
    arr = np.asarray(image)
    if arr.ndim == 2 or arr.shape[2] in (1, 3):  # nothing to composite
        rgb = arr if arr.ndim == 3 and arr.shape[2] == 3 else np.repeat(arr.reshape(*arr.shape[:2], 1), 3, axis=2)
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    colour, alpha = arr[..., :-1], arr[..., -1:].astype(np.float32) / 255.0
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    bg = np.asarray(background, np.float32).reshape(1, 1, 3)
    out = colour.astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass
class ImageCheck:
    status: str  # ok, not_image, unsupported, too_small, too_large, corrupt
    reason: str = ""
    format: str | None = None
    width: int | None = None  # as displayed, after EXIF orientation
    height: int | None = None
    orientation: int = 1


def sniff(body: bytes) -> str | None:
    head = body[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    if low.startswith((b"<?xml", b"<svg")) and b"<svg" in body[:1024].lower():
        return "svg"
    if low.startswith((b"{", b"[")):
        return "json"
    return None


def check_image(body: bytes, content_type: str = "", min_side: int = 64, max_pixels: int = 40_000_000) -> ImageCheck:
    """Classify a body: a usable raster image, or a status with a reason."""
    if not body:
        return ImageCheck("not_image", "empty body")
    kind = sniff(body)
    ctype = content_type.split(";")[0].strip().lower()
    if kind in ("html", "json") or (kind is None and ctype.startswith("text/")):
        return ImageCheck("not_image", f"served {ctype or 'an unknown type'} that looks like {kind or 'text'}")
    if kind == "svg" or ctype == "image/svg+xml":
        return ImageCheck("unsupported", "SVG (vector) image")
    if kind is None:
        return ImageCheck("not_image", f"unknown format (declared {ctype or 'nothing'})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(body))
            w, h = im.size
            if w * h > max_pixels:
                return ImageCheck("too_large", f"{w}x{h} = {w * h:,} pixels exceeds the cap of {max_pixels:,}",
                                  kind, w, h)
            if kind == "gif" and getattr(im, "n_frames", 1) > 1:
                return ImageCheck("unsupported", f"animated GIF ({im.n_frames} frames)", kind, w, h)
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck("too_large", f"decompression bomb: {exc}", kind)
    except UnidentifiedImageError:
        return ImageCheck("corrupt", f"{kind} header that no decoder accepts", kind)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return ImageCheck("corrupt", f"{kind} does not decode: {str(exc)[:100]}", kind)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if min(w, h) < min_side:
        return ImageCheck("too_small", f"{w}x{h} is under the minimum side of {min_side}", kind, w, h, orientation)
    return ImageCheck("ok", "", kind, w, h, orientation)


class ImageProblem(Exception):
    """An image that cannot be used; `status` and `reason` go into the row."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def open_oriented(data: bytes, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode bytes as an RGB PIL image the right way up: EXIF orientation applied; grey,
    palette, CMYK and 16-bit converted; transparency composited (`composite_alpha`). Raises
    ImageProblem (too_large, corrupt, not_image) instead of crashing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageProblem("too_large", f"{w}x{h} exceeds the cap of {max_pixels:,} pixels")
            im.load()
            im = ImageOps.exif_transpose(im)
    except ImageProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem("too_large", f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageProblem("not_image", "no image decoder accepts these bytes") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageProblem("corrupt", f"does not decode: {str(exc)[:100]}") from None
    if has_alpha(im):
        return Image.fromarray(composite_alpha(im))
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 / max(1.0, float(arr.max()))
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8))
    return im.convert("RGB")


def decode_rgb(data: bytes, max_pixels: int = 40_000_000) -> np.ndarray:
    """`open_oriented` as an RGB uint8 HxWx3 array."""
    return np.asarray(open_oriented(data, max_pixels))
