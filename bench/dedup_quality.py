"""Near-duplicate detection quality: precision and recall per method and threshold.

Real photographs from installed packages (wikifaces.fixtures.samples: scikit-image, matplotlib,
scikit-learn, OpenCV's sample data from Debian, pinned wheels) are each turned into
near-duplicates: JPEG at quality 30/60/90, WebP at 50/80, resized to 50/75/150/200 %, cropped by
5 and 10 %, brightness +-10 %, a slight blur, and the harder edits (`harder`: a caption bar, a 3
degree rotation, a 3 % shift, a watermark, gamma, saturation, JPEG at quality 10, a 25 %
downscale). Variants of one photograph are duplicates of it and of each other; every other pair
is a negative, in imagededup's `evaluate` style but over pairs. Pairs of photographs that are
themselves shots of one scene (stereo pairs, consecutive video frames: listed below) are left out
of the count rather than called either.

Each hash alone, and the paper's autoencoder hash twice: trained as a plain denoiser (Gaussian
pixel noise) and as a denoiser of the edits it should ignore (dedup.ae.edit_batch: rotation,
shift, crop, caption bar, colour), both on 32x32 centre crops as the paper did. For each method,
the threshold chosen is the one with the best recall at precision >= 0.99. bench/dedup_verify.py
measures hash candidates plus verification, the stage's default.

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
              "ae": range(0, 41, 2), "ae-edits": range(0, 41, 2)}


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


def harder(img: np.ndarray) -> list[tuple[str, np.ndarray]]:
    h, w = img.shape[:2]
    out = []
    bar = max(8, h // 8)  # a caption bar under the picture, with text
    cap = np.full((h + bar, w, 3), 20, np.uint8)
    cap[:h] = img
    cv2.putText(cap, "Photo: Jane Doe / CC BY-SA", (4, h + int(bar * 0.7)), cv2.FONT_HERSHEY_SIMPLEX,
                bar / 40, (240, 240, 240), max(1, bar // 20), cv2.LINE_AA)
    out.append(("caption", cap))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 3, 1.0)
    out.append(("rotate3", cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)))
    dx, dy = int(w * 0.03), int(h * 0.03)
    out.append(("shift3", np.ascontiguousarray(img[dy:, dx:])))
    mark = img.copy()
    cv2.putText(mark, "(c) stock", (w // 6, h // 2), cv2.FONT_HERSHEY_SIMPLEX, w / 300, (255, 255, 255),
                max(1, w // 150), cv2.LINE_AA)
    out.append(("watermark", cv2.addWeighted(img, 0.6, mark, 0.4, 0)))
    for g in (0.6, 1.6):
        out.append((f"gamma{int(g * 10)}", (255 * (img / 255.0) ** g).astype(np.uint8)))
    for s in (0.4, 1.6):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] = np.clip(hsv[..., 1] * s, 0, 255)
        out.append((f"saturation{int(s * 10)}", cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)))
    out.append(("jpeg10", cv2.imdecode(np.frombuffer(encode(img, "jpeg", 10), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]))
    out.append(("down25", cv2.resize(img, (max(8, w // 4), max(8, h // 4)), interpolation=cv2.INTER_AREA)))
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
        records.extend((pid, v, encode(edited)) for v, edited in harder(img))
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
    for name, edits in (("ae", False), ("ae-edits", True)):
        model, _ = train_autoencoder(crops, bits=128, epochs=60, seed=0, edits=edits)
        codes[name] = ae_codes(model, crops)

    best: dict[str, tuple[int, float, float]] = {}
    print(f"{'method':<9}{'threshold':>10}{'precision':>11}{'recall':>9}{'FP pairs':>10}")
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
            print(f"{method:<9}{t:>10}{precision:>11.4f}{recall:>9.3f}{fp:>10}")
            if precision >= 0.99 and (method not in best or recall > best[method][2]):
                best[method] = (t, precision, recall)
    print("best threshold per method at precision >= 0.99:")
    for method, (t, p, r) in best.items():
        print(f"  {method:<8} threshold {t:>3}: precision {p:.4f}, recall {r:.3f}")
    t, p, r = best["phash"]
    print(f"threshold: {t}")
    print(f"precision: {p:.4f}")
    print(f"recall: {r:.3f}")
    for name in ("ae", "ae-edits"):
        if name in best:
            print(f"{name} recall: {best[name][2]:.3f}")


if __name__ == "__main__":
    main()
