"""Stage `detect`: OpenCV face detection, verification, high-resolution square crops."""

from .config import DetectConfig
from .detect import Detection, FaceDetector, iou
from .stage import DetectSummary, detect_faces, process_image

__all__ = ["DetectConfig", "DetectSummary", "Detection", "FaceDetector", "detect_faces", "iou", "process_image"]
