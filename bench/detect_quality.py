"""Detection quality on real photographs: Haar alone and with each verification step.

Faces: the photographs with faces in wikifaces.fixtures.samples, with boxes labelled by hand once
(tests/fixtures/face_boxes.json). Negatives: every registered photograph without people
(OpenCV's sample data from Debian's opencv-doc, scikit-image, scikit-learn and wheel data).
Needs `python -m wikifaces.fixtures.samples fetch` and Debian's opencv-doc (`make test` sets both up).

Metrics, per configuration:
  image recall          face images with at least one labelled face found (IoU >= 0.5)
  face recall           labelled faces of at least min_face pixels found (IoU >= 0.5): the
                        faces the dataset keeps; "all faces" counts the small ones too
  false positive rate   negative images with any detection kept
Target: false positive rate <= 0.02 at face recall >= 0.80.

    .venv/bin/python bench/detect_quality.py
"""

from __future__ import annotations

import json
from pathlib import Path

from faces.config import DetectConfig
from faces.detect import FaceDetector, iou
from faces.verify import make_verifier
from wikifaces.fixtures.samples import all_photos, load_rgb

BOXES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "face_boxes.json"


def load_sets() -> tuple[list[tuple[str, object, list]], list[tuple[str, object]]]:
    labels = json.loads(BOXES.read_text())["boxes"]
    faces, negatives = [], []
    for p in all_photos():
        path = p.path()
        if path is None:
            continue
        if p.faces == 0:
            negatives.append((p.id, load_rgb(path)))
        elif p.id in labels:
            faces.append((p.id, load_rgb(path), [tuple(b) for b in labels[p.id]]))
    return faces, negatives


def metrics(kept: dict[str, list], faces, negatives, min_face: int) -> dict[str, float]:
    found = total = found_big = total_big = found_images = 0
    for pid, _, boxes in faces:
        hits = [any(iou(d.box, b) >= 0.5 for d in kept[pid]) for b in boxes]
        found += sum(hits)
        total += len(boxes)
        found_big += sum(h for h, b in zip(hits, boxes, strict=True) if min(b[2], b[3]) >= min_face)
        total_big += sum(1 for b in boxes if min(b[2], b[3]) >= min_face)
        found_images += any(hits)
    fp_images = sum(1 for pid, _ in negatives if kept[pid])
    return {"image_recall": found_images / len(faces), "face_recall": found_big / total_big,
            "all_recall": found / total, "fp_rate": fp_images / len(negatives), "fp_images": fp_images}


def main() -> None:
    faces, negatives = load_sets()
    default = DetectConfig()
    n_faces = sum(len(b) for _, _, b in faces)
    n_big = sum(1 for _, _, bs in faces for b in bs if min(b[2], b[3]) >= default.min_face)
    print(f"photographs: {len(faces)} with {n_faces} labelled faces ({n_big} of at least {default.min_face} px), "
          f"{len(negatives)} without faces")
    if len(faces) < 15 or len(negatives) < 80:
        raise SystemExit("too few photographs: run `python -m wikifaces.fixtures.samples fetch` and install opencv-doc")
    images = {pid: img for pid, img, *_ in [*faces, *negatives]}
    verifiers = {name: make_verifier(name) for name in ("eyes", "alt2", "mtcnn")}
    detectors = {
        "haar 1.1/n5 (OpenCV's usual)": DetectConfig(scale_factor=1.1, min_neighbors=5, verify="none"),
        "haar 1.1/n12": DetectConfig(scale_factor=1.1, min_neighbors=12, verify="none"),
        "haar 1.05/n2 (ours)": DetectConfig(verify="none"),
    }
    rows = []
    for dname, cfg in detectors.items():
        detector = FaceDetector(cfg)
        dets = {pid: detector.detect(img) for pid, img in images.items()}
        rows.append((f"{dname}, no check", metrics(dets, faces, negatives, default.min_face)))
        for vname, thresholds in (("eyes", [0.5, 1.0]), ("alt2", [0.3]), ("mtcnn", [0.5, 0.9, 0.99])):
            v = verifiers[vname]
            scores = {pid: v.scores(images[pid], d) for pid, d in dets.items()}
            for t in thresholds:
                kept = {pid: [d for d, s in zip(dets[pid], scores[pid], strict=True) if s >= t] for pid in dets}
                rows.append((f"{dname}, {vname} >= {t}", metrics(kept, faces, negatives, default.min_face)))
    print(f"{'configuration':<46}{'face recall':>12}{'all faces':>10}{'images':>8}{'FP images':>10}{'FP rate':>9}")
    for label, m in rows:
        print(f"{label:<46}{m['face_recall']:>12.2f}{m['all_recall']:>10.2f}{m['image_recall']:>8.2f}"
              f"{m['fp_images']:>10}{m['fp_rate']:>9.3f}")
    haar = rows[0][1]
    ours = f"haar 1.05/n2 (ours), {default.verify} >= {default.verify_threshold}"
    chosen = next(m for label, m in rows if label == ours)
    print(f"default: haar scale 1.05, neighbours >= 2, {default.verify} >= {default.verify_threshold}")
    print(f"haar false positive rate: {haar['fp_rate']:.3f}")
    print(f"haar face recall: {haar['face_recall']:.2f}")
    print(f"false positive rate: {chosen['fp_rate']:.3f}")
    print(f"face recall: {chosen['face_recall']:.2f}")
    print(f"face recall all sizes: {chosen['all_recall']:.2f}")
    print(f"image recall: {chosen['image_recall']:.2f}")


if __name__ == "__main__":
    main()
