"""Square face crops: box expanded by a margin, clipped or reflect-padded at the border,
optionally aligned, resized with a named filter.

Alignment (`DetectConfig.align`): `eyes` rotates the box's square so that the Haar eye cascade's
eyes are level; `landmarks` does what FFHQ does with five landmarks (here MTCNN O-Net's): an
oriented square from the eye and mouth positions (its centre a tenth of the way from the eyes to
the mouth, its side set by the eye distance and the eye-to-mouth distance, whichever is larger),
resampled with the named filter. Scale and position are then set by the face's own geometry,
not by where the detector put its box."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from .config import DetectConfig

FILTERS = {"area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4, "cubic": cv2.INTER_CUBIC,
           "linear": cv2.INTER_LINEAR}

_EYES: list[cv2.CascadeClassifier] = []


def square_box(box: tuple[int, int, int, int], margin: float) -> tuple[float, float, float]:
    """Centre and side of the square around a box, grown by `margin` of the side on each side."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    return x + w / 2, y + h / 2, side


Point = tuple[float, float]
Box = tuple[int, int, int, int]


def find_eyes(rgb: np.ndarray, box: Box) -> tuple[Point, Point] | None:
    """Centres of the left and right eye (in image order) inside a face box, or None.

    The Haar eye cascade proposes eyes in the upper part of the face; in each half the
    candidate nearest to where an eye sits in a frontal face is taken. The pair must look
    like eyes: roughly level and a plausible distance apart."""
    if not _EYES:  # the plain eye cascade and the one trained with glasses, together
        _EYES.extend(cv2.CascadeClassifier(cv2.data.haarcascades + name)
                     for name in ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml"))
    x, y, w, h = box
    face = cv2.cvtColor(rgb[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY)
    if face.size == 0:
        return None
    s = 240 / max(face.shape)
    face = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    fw, fh = face.shape[1], face.shape[0]
    centres = [(e[0] + e[2] / 2, e[1] + e[3] / 2) for cascade in _EYES
               for e in cascade.detectMultiScale(face[: int(fh * 0.65)], 1.05, 2, minSize=(fw // 10, fw // 10),
                                                 maxSize=(fw // 3, fw // 3))]

    def best(cands: list[Point], ex: float) -> Point | None:
        return min(cands, key=lambda c: (c[0] - ex) ** 2 + (c[1] - 0.4 * fh) ** 2, default=None)

    left = best([c for c in centres if c[0] < fw / 2], 0.3 * fw)
    right = best([c for c in centres if c[0] >= fw / 2], 0.7 * fw)
    if left is None or right is None:
        return None
    dx, dy = right[0] - left[0], right[1] - left[1]
    if not (0.25 * fw <= dx <= 0.75 * fw) or abs(dy) > 0.3 * dx:
        return None
    return (x + left[0] / s, y + left[1] / s), (x + right[0] / s, y + right[1] / s)


# FFHQ's square is about 4x the eye distance; ours keeps the detector's framing on average: the
# box-based square (box side x (1 + 2 x margin)) measured 1.053 of FFHQ's at margin 0.25 on the
# labelled photographs (bench/align.py), so the landmark square is FFHQ's x (1 + 2 x margin) / 1.425.
LANDMARK_FRAMING = 1.425
MAX_ROLL = 45.0  # degrees: beyond that the landmarks are more likely wrong than the head tilted


def landmark_square(points: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(centre, half-side vector along the face's x axis, along its y axis) from five landmarks
    (left eye, right eye, nose, left and right mouth corner), or None when they do not look like a
    face (eyes not apart, mouth not below the eyes, rolled more than MAX_ROLL)."""
    p = np.asarray(points, np.float64)
    eye_l, eye_r, mouth = p[0], p[1], (p[3] + p[4]) / 2
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth - eye_avg
    ed, em = float(np.hypot(*eye_to_eye)), float(np.hypot(*eye_to_mouth))
    if ed < 2 or em < 2:
        return None
    cross = eye_to_eye[0] * eye_to_mouth[1] - eye_to_eye[1] * eye_to_mouth[0]
    roll = math.degrees(math.atan2(eye_to_eye[1], eye_to_eye[0]))
    if cross <= 0 or abs(roll) > MAX_ROLL or not 0.5 <= em / ed <= 2.5:
        return None
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    x /= np.hypot(*x)
    x *= max(ed * 2.0, em * 1.8) * (1 + 2 * margin) / LANDMARK_FRAMING
    y = np.flipud(x) * np.array([-1.0, 1.0])
    return eye_avg + eye_to_mouth * 0.1, x, y


def _warp_square(rgb: np.ndarray, c: np.ndarray, x: np.ndarray, y: np.ndarray, out: int, filt: str) -> np.ndarray:
    """Resample the oriented square (centre c, half-axes x and y) to out x out pixels; a large
    square is first shrunk with area averaging, so that no filter aliases."""
    side = 2 * float(np.hypot(*x))
    shrink = int(side / out / 2)
    if shrink > 1:
        rgb = cv2.resize(rgb, (max(1, rgb.shape[1] // shrink), max(1, rgb.shape[0] // shrink)),
                         interpolation=cv2.INTER_AREA)
        c, x, y = c / shrink, x / shrink, y / shrink
    src = np.float32([c - x - y, c + x - y, c - x + y])  # top-left, top-right, bottom-left
    dst = np.float32([[0, 0], [out, 0], [0, out]])
    flags = cv2.INTER_LINEAR if filt == "area" else FILTERS[filt]  # area is not a warp filter: shrunk above
    return cv2.warpAffine(rgb, cv2.getAffineTransform(src, dst), (out, out), flags=flags,
                          borderMode=cv2.BORDER_REFLECT_101)


def crop_face(rgb: np.ndarray, box: Box, config: DetectConfig, landmarks: np.ndarray | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
    """The crop and a record of how it was made (enough to redo it from the source). `landmarks`
    (five points, image pixels) are needed for `align="landmarks"`; without usable ones the crop
    falls back to the box and says so."""
    H, W = rgb.shape[:2]
    cx, cy, side = square_box(box, config.margin)
    angle = 0.0
    aligned = False
    if config.align == "landmarks":
        square = landmark_square(landmarks, config.margin) if landmarks is not None else None
        if square is not None:
            c, x, y = square
            img = _warp_square(rgb, c, x, y, config.size, config.resize_filter)
            half = float(np.hypot(*x))
            angle = math.degrees(math.atan2(x[1], x[0]))
            x0, y0 = c[0] - half, c[1] - half
            corners = np.stack([c - x - y, c + x - y, c - x + y, c + x + y])
            padded = bool((corners < 0).any() or (corners[:, 0] > W).any() or (corners[:, 1] > H).any())
            transform = _record(config, float(x0), float(y0), 2 * half, "reflect", padded, "landmarks", angle)
            transform["landmarks"] = [[round(float(v), 1) for v in pt] for pt in np.asarray(landmarks)]
            return np.ascontiguousarray(img), transform
    if config.align == "eyes":
        eyes = find_eyes(rgb, box)
        if eyes is not None:
            (lx, ly), (rx, ry) = eyes
            angle = math.degrees(math.atan2(ry - ly, rx - lx))
            aligned = abs(angle) <= 30  # beyond that the "eyes" are more likely wrong than the head tilted
            if not aligned:
                angle = 0.0
    if config.border == "clip":
        side = min(side, W, H)
        x0 = min(max(cx - side / 2, 0), W - side)
        y0 = min(max(cy - side / 2, 0), H - side)
        cx, cy = x0 + side / 2, y0 + side / 2
    out = config.size
    if aligned:
        # Rotate a larger region about the face centre, then take the square from its middle.
        big = side * 1.5
        region = _crop_square(rgb, cx, cy, big)
        c = region.shape[0] / 2
        m = cv2.getRotationMatrix2D((c, c), angle, 1.0)
        region = cv2.warpAffine(region, m, region.shape[1::-1], flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
        crop = _crop_square(region, c, c, side)
    else:
        crop = _crop_square(rgb, cx, cy, side)
    img = cv2.resize(crop, (out, out), interpolation=FILTERS[config.resize_filter])
    x0, y0 = cx - side / 2, cy - side / 2
    padded = x0 < 0 or y0 < 0 or x0 + side > W or y0 + side > H
    transform = _record(config, x0, y0, side, config.border, padded, config.align if aligned else "none", angle)
    return np.ascontiguousarray(img), transform


def _record(config: DetectConfig, x0: float, y0: float, side: float, border: str, padded: bool, align: str,
            angle: float) -> dict[str, Any]:
    """How a crop was made: its square in the source (before any rotation), and the settings."""
    return {
        "square": [round(x0, 1), round(y0, 1), round(side, 1)], "margin": config.margin, "border": border,
        "padded": padded, "size": config.size, "filter": config.resize_filter, "upscaled": side < config.size,
        "aligned": align != "none", "align": align, "angle": round(angle, 2),
    }


def _crop_square(rgb: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    H, W = rgb.shape[:2]
    s = max(1, round(side))
    x0, y0 = round(cx - s / 2), round(cy - s / 2)
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + s - W), max(0, y0 + s - H)
    if pad_l or pad_t or pad_r or pad_b:
        # reflect (101) cannot pad beyond the image's own size; fall back to replicate for the rest
        border = cv2.BORDER_REFLECT_101 if max(pad_l, pad_r) < W and max(pad_t, pad_b) < H else cv2.BORDER_REPLICATE
        rgb = cv2.copyMakeBorder(rgb, pad_t, pad_b, pad_l, pad_r, border)
        x0 += pad_l
        y0 += pad_t
    return rgb[y0 : y0 + s, x0 : x0 + s]
