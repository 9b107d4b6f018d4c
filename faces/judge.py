"""Judging small face images (a generator's samples, or our own crops) with offline models.

* `describe`: dlib's 128-d face descriptor (`dlib_face_recognition_resnet_model_v1.dat`, a
  public-domain model shipped in the `face-recognition-models` package with dlib's 5-point
  landmark model; never downloaded). Our crops put the face box in the middle of the image (the
  crop adds `margin` of the box on each side), so the landmarks are found inside that box and the
  descriptor is taken on dlib's aligned 150x150 chip.
* `face_rate`: the share of images in which our own detector (Haar, the `detect` stage's) finds
  a face of at least a third of the image that MTCNN's O-Net then verifies.
"""

from __future__ import annotations

import importlib.metadata

import cv2
import numpy as np

from .config import DetectConfig
from .detect import FaceDetector
from .verify import MtcnnVerifier, _package_file

MODELS_PACKAGE = "face_recognition_models"
DESCRIPTOR_MODEL = "models/dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_MODEL = "models/shape_predictor_5_face_landmarks.dat"  # not the 68-point model (non-commercial data)
UPSCALE = 128  # images are judged at this side at least: Haar's and dlib's windows need ~40 px faces


def descriptor_version() -> str:
    """The descriptor model and the versions that produce it: recorded with every figure."""
    return (f"dlib {importlib.metadata.version('dlib-bin')} resnet_v1 128-d, "
            f"face-recognition-models {importlib.metadata.version('face-recognition-models')}")


class FaceJudge:
    """A training `Judge` (see `training.quality`) for face datasets."""

    space = "dlib128"

    def __init__(self, margin: float = 0.25, verify_threshold: float = 0.9, min_share: float = 1 / 3) -> None:
        import dlib

        self.dlib = dlib
        self.predictor = dlib.shape_predictor(str(_package_file(MODELS_PACKAGE, LANDMARK_MODEL)))
        self.net = dlib.face_recognition_model_v1(str(_package_file(MODELS_PACKAGE, DESCRIPTOR_MODEL)))
        self.margin = margin
        self.description = descriptor_version()
        self.threshold = verify_threshold
        self.min_share = min_share
        self._detector: FaceDetector | None = None
        self._verifier: MtcnnVerifier | None = None

    def _big(self, image: np.ndarray) -> np.ndarray:
        side = image.shape[0]
        if side >= UPSCALE:
            return np.ascontiguousarray(image)
        return cv2.resize(image, (UPSCALE, UPSCALE), interpolation=cv2.INTER_CUBIC)

    def describe(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), 128), np.float32)
        for i, image in enumerate(images):
            big = self._big(image)
            side = big.shape[0]
            inset = round(side * self.margin / (1 + 2 * self.margin))  # the face box inside the crop
            box = self.dlib.rectangle(inset, inset, side - inset, side - inset)
            shape = self.predictor(big, box)
            out[i] = np.asarray(self.net.compute_face_descriptor(big, shape), np.float32)
        return out

    def faces(self, images: np.ndarray) -> np.ndarray:
        """True where a verified face of at least `min_share` of the side is found."""
        if self._detector is None:
            size = round(UPSCALE * self.min_share)
            self._detector = FaceDetector(DetectConfig(min_size=size, detect_max_side=None, detect_window=None,
                                                       min_neighbors=3, min_face=size))
            self._verifier = MtcnnVerifier()
        assert self._verifier is not None
        found = np.zeros(len(images), bool)
        for i, image in enumerate(images):
            big = self._big(image)
            dets = self._detector.detect(big)
            found[i] = any(s >= self.threshold for s in self._verifier.scores(big, dets))
        return found

    def face_rate(self, images: np.ndarray) -> float:
        return float(self.faces(images).mean()) if len(images) else 0.0
