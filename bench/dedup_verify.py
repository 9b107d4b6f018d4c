"""Near-duplicates that survive edits: hash candidates, then verification (dedup/verify.py).

Real photographs from installed packages, imported as the dedup stage sees LSUN (shorter side to
64 px, centre crop), each turned into near-duplicates by the edits bench/dedup_quality.py makes
(JPEG, WebP, resizing, 5/10 % crops, brightness, blur) and by harder ones: a caption bar, a 3 degree
rotation, a 3 % shift, a watermark, gamma 0.6/1.6, saturation 0.4/1.6, JPEG at quality 10, a
downscale to 25 %. Hard negatives (trap pairs): different shots of one scene, OpenCV's
calibration-board series (left01..14 and right01..14: one board in many poses, a stereo pair each)
and its other stereo and video pairs. A link between two shots of one scene is a trap merged.

Side by side, on the same candidates: phash alone at today's threshold 5 (the anchor), phash
alone at wider thresholds, and phash candidates within a radius verified pair by pair. Precision
and recall over pairs, and as clusters (a pair counts when its two records end in one group).

    .venv/bin/python bench/dedup_verify.py
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import cv2
import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench.dedup_quality import SAME_SCENE, encode, variants  # noqa: E402
from dedup.clusters import components  # noqa: E402
from dedup.hashing import hash_bytes  # noqa: E402
from dedup.search import brute_force_pairs  # noqa: E402
from dedup.verify import prepare, verify  # noqa: E402
from wikifaces.fixtures.samples import all_photos, load_rgb  # noqa: E402

BOARDS = {f"cv-{side}{k:02d}" for side in ("left", "right") for k in range(1, 15)}
SCENES = [*SAME_SCENE, BOARDS]


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


def import64(img: np.ndarray) -> np.ndarray:
    """As lsun-import does: shorter side to 64, centre crop."""
    h, w = img.shape[:2]
    s = 64 / min(h, w)
    img = cv2.resize(img, (max(64, round(w * s)), max(64, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    y, x = (h - 64) // 2, (w - 64) // 2
    return np.ascontiguousarray(img[y : y + 64, x : x + 64])


def records() -> list[tuple[str, str, np.ndarray]]:
    out = []
    for p in all_photos():
        if (path := p.path()) is None:
            continue
        img = load_rgb(path)
        if max(img.shape[:2]) > 512:
            s = 512 / max(img.shape[:2])
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        out.append((p.id, "original", import64(img)))
        for name, data in variants(img):
            out.append((p.id, name, import64(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])))
        out.extend((p.id, name, import64(v)) for name, v in harder(img))
    return out


def score(n: int, links: np.ndarray, base: np.ndarray, scene: np.ndarray, edit: np.ndarray) -> dict:
    same = base[links[:, 0]] == base[links[:, 1]]
    trap = (scene[links[:, 0]] == scene[links[:, 1]]) & ~same
    labels = components(n, links[:, :2].astype(np.int64)) if len(links) else np.arange(n)
    pos_i, pos_j = np.array([(i, j) for i, j in itertools.combinations(range(n), 2) if base[i] == base[j]]).T
    pair_set = {(min(i, j), max(i, j)) for i, j in links[:, :2].tolist()}
    found = np.array([(i, j) in pair_set for i, j in zip(pos_i.tolist(), pos_j.tolist(), strict=True)])
    grouped = labels[pos_i] == labels[pos_j]
    # clusters: every pair inside a group is a claim
    sizes = np.bincount(labels)
    claims = int(sum(s * (s - 1) // 2 for s in sizes))
    true_claims = int(grouped.sum())
    trap_groups = sum(1 for i, j in itertools.combinations(range(n), 2)
                      if scene[i] == scene[j] and base[i] != base[j] and labels[i] == labels[j]) if len(links) else 0
    per_edit = {}
    for e in sorted(set(edit.tolist()) - {"original"}):
        # recall of an edit: its variant linked (pairs) / grouped (clusters) with its original
        idx = [k for k in range(len(pos_i)) if {edit[pos_i[k]], edit[pos_j[k]]} == {"original", e}]
        per_edit[e] = (float(found[idx].mean()), float(grouped[idx].mean()))
    return {"precision": float(same.mean()) if len(links) else 1.0, "recall": float(found.mean()),
            "cluster_precision": true_claims / claims if claims else 1.0, "cluster_recall": float(grouped.mean()),
            "traps": int(trap.sum()), "trap_groups": trap_groups, "per_edit": per_edit}


def main() -> None:
    recs = records()
    n = len(recs)
    base = np.array([r[0] for r in recs])
    edit = np.array([r[1] for r in recs])
    scene_of = {pid: k for k, group in enumerate(SCENES) for pid in group}
    scene = np.array([scene_of.get(b, -1 - k) for k, b in enumerate(base)])
    codes = np.stack([hash_bytes(encode(img), "phash")[0] for _, _, img in recs])
    prepared = [prepare(img) for _, _, img in recs]
    print(f"records: {n} ({len(set(base))} photographs x {n // len(set(base))} versions), 64 px import; "
          f"trap photographs: {sum(1 for b in set(base) if b in scene_of)}")
    cand = brute_force_pairs(codes, 20)
    t = time.perf_counter()
    verdicts = {}
    for i, j, _ in cand.tolist():
        verdicts[(i, j)] = verify(prepared[i], prepared[j])
    verify_ms = (time.perf_counter() - t) * 1000 / max(1, len(cand))
    rows = []
    for thr in (5, 8, 10, 12):
        links = cand[cand[:, 2] <= thr]
        rows.append((f"phash <= {thr} (hash alone)", score(n, links, base, scene, edit)))
    for radius in (8, 10, 12, 14, 16, 20):
        keep = np.array([d <= radius and verdicts[(i, j)].same for i, j, d in cand.tolist()], bool)
        rows.append((f"phash <= {radius}, verified", score(n, cand[keep], base, scene, edit)))
    edits = list(rows[0][1]["per_edit"])
    print(f"{'setting':<28}{'prec':>7}{'recall':>8}{'cl.prec':>8}{'cl.rec':>8}{'traps':>6} "
          + " ".join(f"{e[:9]:>9}" for e in edits))
    for label, r in rows:
        print(f"{label:<28}{r['precision']:>7.3f}{r['recall']:>8.3f}{r['cluster_precision']:>8.3f}"
              f"{r['cluster_recall']:>8.3f}{r['trap_groups']:>6} "
              + " ".join(f"{r['per_edit'][e][0]:>9.2f}" for e in edits))
    best = rows[-3][1]  # radius 14, verified
    print(f"verify ms per pair: {verify_ms:.2f}")
    print(f"candidates within 20: {len(cand)}")
    print(f"precision: {best['precision']:.4f}")
    print(f"recall: {best['recall']:.3f}")
    print(f"recall as clusters: {best['cluster_recall']:.3f}")
    print(f"trap pairs merged: {best['trap_groups']}")


if __name__ == "__main__":
    main()
