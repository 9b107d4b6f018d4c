"""Stage `detect`: OpenCV face detection, verification, high-resolution square crops.

The names below load on first use, so that `faces.config` stays a cheap import."""

from __future__ import annotations

from wikifaces.core.lazy import lazy_exports

_FROM = {
    "DetectConfig": "config",
    "Detection": "detect", "FaceDetector": "detect", "iou": "detect",
    "DetectSummary": "stage", "detect_faces": "stage", "process_image": "stage",
}

__getattr__ = lazy_exports(__name__, _FROM)
__all__ = sorted(_FROM)
