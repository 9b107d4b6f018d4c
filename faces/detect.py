"""Face detection: OpenCV's Haar cascade (the paper's detector) on a downscaled grey copy,
boxes mapped back to full resolution; YuNet when the user gives its model file."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import DetectConfig


@dataclass
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in source pixels
    neighbors: int | None = None  # Haar: how many raw windows agreed
    score: float | None = None  # detector confidence where it has one (YuNet, verification)
    landmarks: list[float] = field(default_factory=list)

    @property
    def side(self) -> int:
        return min(self.box[2], self.box[3])


def detector_info(config: DetectConfig) -> dict:
    """Name, version and parameters: recorded with every face."""
    params = {"scale_factor": config.scale_factor, "min_neighbors": config.min_neighbors,
              "min_size": config.min_size, "detect_max_side": config.detect_max_side,
              "detect_window": config.detect_window, "equalize": config.equalize}
    if config.detector == "haar":
        return {"name": f"opencv-haar:{config.cascade}", "version": cv2.__version__, "params": params}
    return {"name": f"opencv-yunet:{config.yunet_model.name}", "version": cv2.__version__,  # type: ignore[union-attr]
            "params": params}


class FaceDetector:
    """One per process: cascades are not shared across processes."""

    def __init__(self, config: DetectConfig) -> None:
        self.config = config
        if config.detector == "haar":
            path = cv2.data.haarcascades + config.cascade
            self.cascade = cv2.CascadeClassifier(path)
            if self.cascade.empty():
                raise RuntimeError(f"OpenCV could not load the cascade {path}")
        else:
            self.yunet = cv2.FaceDetectorYN.create(str(config.yunet_model), "", (320, 320), 0.7, 0.3, 5000)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        cfg = self.config
        h, w = rgb.shape[:2]
        scale = detection_scale(cfg, h, w)
        if cfg.detector == "yunet":
            return self._yunet(rgb, scale)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if cfg.equalize:
            grey = cv2.equalizeHist(grey)
        min_px = max(20, round(cfg.min_size * scale))
        boxes, neighbors = self.cascade.detectMultiScale2(
            grey, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=(min_px, min_px))
        return [Detection(_unscale(tuple(b), scale, w, h), neighbors=int(n))
                for b, n in zip(boxes, neighbors, strict=True)]

    def _yunet(self, rgb: np.ndarray, scale: float) -> list[Detection]:
        h, w = rgb.shape[:2]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        self.yunet.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.yunet.detect(bgr)
        out = []
        for f in faces if faces is not None else []:
            box = _unscale(tuple(f[:4]), scale, w, h)
            if box[2] >= self.config.min_size:
                out.append(Detection(box, score=float(f[14]), landmarks=[float(v) / scale for v in f[4:14]]))
        return out


def detection_scale(cfg: DetectConfig, h: int, w: int) -> float:
    """How much to shrink an image before detection (1.0: not at all)."""
    scale = 1.0
    if cfg.detect_max_side:
        scale = min(scale, cfg.detect_max_side / max(h, w))
    if cfg.detect_window:
        scale = min(scale, cfg.detect_window / cfg.min_size)
    return scale


def _unscale(box: tuple, scale: float, w: int, h: int) -> tuple[int, int, int, int]:
    x, y, bw, bh = (float(v) / scale for v in box)
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(w, round(x + bw)), min(h, round(y + bh))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0
