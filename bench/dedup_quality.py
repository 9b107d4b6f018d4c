"""Near-duplicate detection quality: precision and recall per method and threshold.

Real photographs from installed packages (wikifaces.fixtures.samples: scikit-image, matplotlib,
scikit-learn, OpenCV's sample data from Debian, pinned wheels) are each turned into
near-duplicates: JPEG at quality 30/60/90, WebP at 50/80, resized to 50/75/150/200 %, cropped by
5 and 10 %, brightness +-10 %, a slight blur. Variants of one photograph are duplicates of it and
of each other; every other pair is a negative, in imagededup's `evaluate` style but over pairs.
Pairs of photographs that are themselves shots of one scene (stereo pairs, consecutive video
frames: listed below) are left out of the count rather than called either.

For each method, the threshold chosen is the one with the best recall at precision >= 0.99.

    .venv/bin/python bench/dedup_quality.py
"""

from __future__ import annotations

import io
import sys

import cv2
import numpy as np
from PIL import Image

from dedup.ae import ae_codes, train_autoencoder
from dedup.hashing import centre_crop, hash_bytes
from dedup.search import brute_force_pairs
from wikifaces.fixtures.samples import all_photos, load_rgb

# Different photographs of one scene: neither duplicates nor distinct, so left out of the count.
SAME_SCENE = [{"cv-aloeL", "cv-aloeR", "cv-aloeGT"}, {"cv-basketball1", "cv-basketball2"},
              {"cv-Blender_Suzanne1", "cv-Blender_Suzanne2"}, {"cv-rubberwhale1", "cv-rubberwhale2"},
              {"cv-ela_original", "cv-ela_modified"}, {"cv-left", "cv-right"}, {"cv-leuvenA", "cv-leuvenB"},
              {"cv-graf1", "cv-graf3"}, {"cv-box", "cv-box_in_scene"}, {"cv-text_defocus", "cv-text_motion"},
              {"skimage-motorcycle_left", "skimage-motorcycle_right"}, {"cv-tmpl", "cv-templ"},
              {"cv-opencv-logo", "cv-opencv-logo-white"}, {"cv-pic1", "cv-pic2", "cv-pic3", "cv-pic4", "cv-pic5"}]
THRESHOLDS = {"phash": range(0, 17), "dhash": range(0, 17), "whash": range(0, 17), "ahash": range(0, 17),
              "ae": range(0, 41, 2)}


def encode(img: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt], quality=quality)
    return buf.getvalue()


def variants(img: np.ndarray) -> list[tuple[str, bytes]]:
    h, w = img.shape[:2]
    out = [(f"jpeg{q}", encode(img, "jpeg", q)) for q in (30, 60, 90)]
    out += [(f"webp{q}", encode(img, "webp", q)) for q in (50, 80)]
    for s in (0.5, 0.75, 1.5, 2.0):
        size = (max(8, int(w * s)), max(8, int(h * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
        out.append((f"resize{int(s * 100)}", encode(cv2.resize(img, size, interpolation=interp))))
    for c in (0.05, 0.10):
        dy, dx = int(h * c / 2), int(w * c / 2)
        out.append((f"crop{int(c * 100)}", encode(np.ascontiguousarray(img[dy : h - dy, dx : w - dx]))))
    for g in (0.9, 1.1):
        out.append((f"bright{int(g * 100)}", encode(np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8))))
    out.append(("blur", encode(cv2.GaussianBlur(img, (0, 0), 1.0))))
    return out


def main() -> None:
    photos = [(p.id, load_rgb(path)) for p in all_photos() if (path := p.path()) is not None]
    if len(photos) < 60:
        sys.exit("too few photographs: run `python -m wikifaces.fixtures.samples fetch` and install opencv-doc")
    records: list[tuple[str, str, bytes]] = []  # (photo id, variant, bytes)
    for pid, img in photos:
        if max(img.shape[:2]) > 512:
            s = 512 / max(img.shape[:2])
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        records.append((pid, "original", encode(img)))
        records.extend((pid, v, data) for v, data in variants(img))
    base = np.array([r[0] for r in records])
    scene_of = {pid: k for k, group in enumerate(SAME_SCENE) for pid in group}
    n = len(records)
    same = base[:, None] == base[None, :]
    scene = np.array([scene_of.get(b, -1 - k) for k, b in enumerate(base)])
    ignored = (scene[:, None] == scene[None, :]) & ~same
    iu = np.triu_indices(n, 1)
    positive, counted = same[iu], ~ignored[iu]
    total_pos = int((positive & counted).sum())
    print(f"photographs: {len(photos)}, images with variants: {n}, duplicate pairs: {total_pos}, "
          f"distinct pairs: {int((~positive & counted).sum())}")

    codes: dict[str, np.ndarray] = {}
    for method in ("phash", "dhash", "whash", "ahash"):
        codes[method] = np.stack([hash_bytes(data, method)[0] for _, _, data in records])
    crops = np.stack([centre_crop(data) for _, _, data in records])
    model, _ = train_autoencoder(crops, bits=128, epochs=60, seed=0)
    codes["ae"] = ae_codes(model, crops)

    best: dict[str, tuple[int, float, float]] = {}
    print(f"{'method':<7}{'threshold':>10}{'precision':>11}{'recall':>9}{'FP pairs':>10}")
    for method, c in codes.items():
        pairs = brute_force_pairs(c, max(THRESHOLDS[method]))
        dist = np.full(len(iu[0]), 999, np.int64)
        flat = pairs[:, 0] * n - pairs[:, 0] * (pairs[:, 0] + 1) // 2 + (pairs[:, 1] - pairs[:, 0] - 1)
        dist[flat] = pairs[:, 2]
        for t in THRESHOLDS[method]:
            hit = (dist <= t) & counted
            tp = int((hit & positive).sum())
            fp = int((hit & ~positive).sum())
            precision = tp / (tp + fp) if tp + fp else 1.0
            recall = tp / total_pos
            print(f"{method:<7}{t:>10}{precision:>11.4f}{recall:>9.3f}{fp:>10}")
            if precision >= 0.99 and (method not in best or recall > best[method][2]):
                best[method] = (t, precision, recall)
    print("best threshold per method at precision >= 0.99:")
    for method, (t, p, r) in best.items():
        print(f"  {method:<6} threshold {t:>3}: precision {p:.4f}, recall {r:.3f}")
    t, p, r = best["phash"]
    print(f"threshold: {t}")
    print(f"precision: {p:.4f}")
    print(f"recall: {r:.3f}")
    if "ae" in best:
        print(f"ae recall: {best['ae'][2]:.3f}")


if __name__ == "__main__":
    main()
