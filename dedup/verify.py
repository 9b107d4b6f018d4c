"""Verification of candidate pairs: is B the same picture as A after an edit?

A near-duplicate is the same picture moved by a near-similarity (a small rotation, shift, crop or
rescale) plus local edits (a caption bar, a watermark) and photometric ones (gamma, saturation,
JPEG). Different shots of one scene (a calibration-board series, a stereo pair) differ by
perspective and parallax. So: align B to A densely with OpenCV's ECC (an affine model, robust to
brightness and contrast), refuse alignments that are not near-similarities, then compare the
aligned pictures tile by tile with normalised cross-correlation: a near-duplicate agrees almost
everywhere, a local edit spoils a few tiles, parallax spoils many. Works on the small squares a
dedup stage has at hand (64 px), in 2-3 ms a pair on one core (the alignment is most of it; the
tiles are compared all at once); no keypoints needed (ORB finds too few at that size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 64
GRID = 4


@dataclass(frozen=True)
class Verdict:
    same: bool
    agreement: float  # share of comparable tiles whose correlation passes
    rotation: float  # degrees
    scale: float
    reason: str


def prepare(img: np.ndarray, size: int = SIZE) -> np.ndarray:
    """A picture as verification compares it: grey, float32, `size` x `size` (area-averaged)."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    if grey.shape != (size, size):
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32)


def verify(a: np.ndarray, b: np.ndarray, *, min_agreement: float = 0.75, tile_ncc: float = 0.6,
           max_rotation: float = 10.0, max_scale: float = 1.25, max_anisotropy: float = 1.08,
           min_textured: int = 6) -> Verdict:
    """Whether prepared pictures `a` and `b` are one picture (see the module docstring)."""
    size = a.shape[0]
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 60, 1e-5)
    try:
        _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        return Verdict(False, 0.0, 0.0, 1.0, "the alignment did not converge")
    lin = warp[:, :2].astype(np.float64)
    u, s, vt = np.linalg.svd(lin)
    rot = u @ vt
    angle = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    scale = float(math.sqrt(s[0] * s[1]))
    if np.linalg.det(rot) < 0 or abs(angle) > max_rotation or not 1 / max_scale <= scale <= max_scale \
            or s[0] / max(s[1], 1e-9) > max_anisotropy:
        return Verdict(False, 0.0, angle, scale, f"not a near-similarity (rotation {angle:.1f}, scale {scale:.2f}, "
                                                 f"anisotropy {s[0] / max(s[1], 1e-9):.2f})")
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(b, warp, (size, size), flags=flags)
    inside = cv2.warpAffine(np.ones_like(b), warp, (size, size), flags=flags, borderValue=0) > 0.99
    t = size // GRID
    tiles = (GRID, t, GRID, t)
    # every tile at once: (16, t*t) pixels of each picture and of the overlap mask
    ta, tb, tm = (x[: GRID * t, : GRID * t].reshape(tiles).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
                  for x in (a, aligned, inside.astype(np.float32)))
    count = tm.sum(axis=1)
    comparable = count >= 0.6 * t * t  # mostly outside the other picture: not comparable
    count = np.maximum(count, 1)
    ma, mb = (ta * tm).sum(axis=1) / count, (tb * tm).sum(axis=1) / count
    da, db = (ta - ma[:, None]) * tm, (tb - mb[:, None]) * tm
    sa, sb = np.sqrt((da * da).sum(axis=1) / count), np.sqrt((db * db).sum(axis=1) / count)
    flat_a, flat_b = sa < 4, sb < 4
    both_flat = comparable & flat_a & flat_b  # flat in both: agree when about as bright
    tex = comparable & ~flat_a & ~flat_b
    ncc = (da * db).sum(axis=1) / count / np.maximum(sa * sb, 1e-9)
    total = int(comparable.sum())
    textured = int(tex.sum())
    agree = int((both_flat & (np.abs(ma - mb) < 24)).sum() + (tex & (ncc >= tile_ncc)).sum())
    if total < GRID * GRID // 2:
        return Verdict(False, 0.0, angle, scale, "too little overlap after alignment")
    if textured < min_textured:  # flat pictures (shapes, logos) agree everywhere: the test says nothing
        return Verdict(False, 0.0, angle, scale, f"only {textured} textured tiles: too little to tell")
    share = agree / total
    same = share >= min_agreement
    return Verdict(same, share, angle, scale,
                   f"{agree}/{total} tiles agree after a {angle:.1f} deg, x{scale:.2f} alignment")
