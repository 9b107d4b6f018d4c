"""Stage `detect`: OpenCV face detection, verification, high-resolution square crops.

The names below load on first use, so that `faces.config` stays a cheap import."""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {
    "DetectConfig": "config",
    "Detection": "detect", "FaceDetector": "detect", "iou": "detect",
    "DetectSummary": "stage", "detect_faces": "stage", "process_image": "stage",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module 'faces' has no attribute {name!r}")


__all__ = sorted(_FROM)
