"""Stages `detect` (OpenCV face detection, verification, aligned high-resolution square crops) and
`identity` (each kept face checked to be the person it is filed under).

The names below load on first use, so that `faces.config` stays a cheap import."""

from __future__ import annotations

from wikifaces.core.lazy import lazy_exports

_FROM = {
    "DetectConfig": "config",
    "Detection": "detect", "FaceDetector": "detect", "iou": "detect",
    "DetectSummary": "stage", "detect_faces": "stage", "process_image": "stage",
    "IdentityConfig": "config", "IdentitySummary": "identity", "check_identities": "identity",
}

__getattr__ = lazy_exports(__name__, _FROM)
__all__ = sorted(_FROM)
