"""Face alignment: how consistently each `--align` setting places the eyes in the crops.

On the hand-labelled photographs (tests/fixtures/face_boxes.json), each as it is and turned by
+-10 and +-20 degrees about the face (heads are not always upright in portraits), every labelled
face of at least 40 px is cropped with `align` none, eyes and landmarks (the stage's own
`crop_face`, O-Net's landmarks as the `detect` stage computes them). The eyes are then found in
each crop by an independent model, dlib's 5-point shape predictor, and we report:

  eye spread       the standard deviation of the eye positions across crops, as a share of the
                   crop side, averaged over the four coordinates (lower: better aligned)
  roll spread      the standard deviation of the eye line's angle, in degrees
  aligned share    the crops the method could align (the others fall back to the detector's box)
  framing          the box-based square's side over FFHQ's landmark square's side (median), the
                   figure that sets faces.crop.LANDMARK_FRAMING

    .venv/bin/python bench/align.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]  # our scripts shadow packages

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from faces.config import DetectConfig  # noqa: E402
from faces.crop import LANDMARK_FRAMING, crop_face, landmark_square, square_box  # noqa: E402
from faces.detect import Detection  # noqa: E402
from faces.judge import LANDMARK_MODEL, MODELS_PACKAGE  # noqa: E402
from faces.verify import MtcnnVerifier, _package_file  # noqa: E402
from wikifaces.fixtures.samples import all_photos, load_rgb  # noqa: E402

BOXES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "face_boxes.json"
TURNS = (0, 10, -10, 20, -20)
METHODS = ("none", "eyes", "landmarks")


def turned(rgb: np.ndarray, box: tuple[int, int, int, int], degrees: float) -> tuple[np.ndarray, tuple]:
    """The image turned about the face's centre, and the face's box there (same size, same centre)."""
    x, y, w, h = box
    centre = (x + w / 2, y + h / 2)
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    out = cv2.warpAffine(rgb, m, rgb.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out, box


def eyes_in(crop: np.ndarray, margin: float, predictor, dlib) -> tuple[np.ndarray, np.ndarray]:
    """(left eye, right eye) centres in a crop as shares of its side, by dlib's 5-point model."""
    side = crop.shape[0]
    big = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC) if side < 256 else crop
    s = big.shape[0]
    inset = round(s * margin / (1 + 2 * margin))
    shape = predictor(np.ascontiguousarray(big), dlib.rectangle(inset, inset, s - inset, s - inset))
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(4)], float) / s
    a, b = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)
    return (a, b) if a[0] < b[0] else (b, a)


def main() -> None:
    import dlib

    predictor = dlib.shape_predictor(str(_package_file(MODELS_PACKAGE, LANDMARK_MODEL)))
    labels = json.loads(BOXES.read_text())["boxes"]
    onet = MtcnnVerifier()
    configs = {m: DetectConfig(align=m, size=128) for m in METHODS}
    eyes: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    aligned: dict[str, int] = dict.fromkeys(METHODS, 0)
    framing = []
    n = 0
    for p in all_photos():
        path = p.path()
        if path is None or p.id not in labels:
            continue
        rgb0 = load_rgb(path)
        for box in labels[p.id]:
            box = tuple(int(v) for v in box)
            if min(box[2], box[3]) < 40:
                continue
            for turn in TURNS:
                rgb, b = turned(rgb0, box, turn)
                _, pts = onet.scores_and_landmarks(rgb, [Detection(b)])
                sq = landmark_square(pts[0], 0.25)
                if sq is not None and turn == 0:
                    ffhq_side = 2 * float(np.hypot(*sq[1])) * LANDMARK_FRAMING / 1.5  # FFHQ's own side
                    framing.append(square_box(b, 0.25)[2] / ffhq_side)
                n += 1
                for m in METHODS:
                    crop, t = crop_face(rgb, b, configs[m], pts[0])
                    aligned[m] += bool(t["aligned"])
                    left, right = eyes_in(crop, 0.25, predictor, dlib)
                    eyes[m].append(np.concatenate([left, right]))
    print(f"faces: {n // len(TURNS)} labelled faces x {len(TURNS)} turns ({', '.join(map(str, TURNS))} degrees) "
          f"= {n} crops")
    print("\n| align | eye spread (share of side) | roll spread (degrees) | aligned share |")
    print("|---|---|---|---|")
    results = {}
    for m in METHODS:
        e = np.stack(eyes[m])
        spread = float(e.std(axis=0).mean())
        roll = np.degrees(np.arctan2(e[:, 3] - e[:, 1], e[:, 2] - e[:, 0]))
        results[m] = (spread, float(roll.std()), aligned[m] / n)
        print(f"| {m} | {spread:.4f} | {roll.std():.2f} | {aligned[m] / n:.3f} |")
    print(f"\nframing (box square / FFHQ square, median of {len(framing)}): {np.median(framing):.3f}")
    for m in METHODS:
        print(f"eye spread ({m}): {results[m][0]:.4f}")
    for m in METHODS:
        print(f"aligned share ({m}): {results[m][2]:.3f}")


if __name__ == "__main__":
    main()
