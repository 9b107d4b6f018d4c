"""Prefect flows over the wikifaces stages: the only package that imports prefect.

Its submodules load on first use, so that `flows.server` (which starts a Prefect server as a
process) can run, and set PREFECT_API_URL, before prefect itself is imported and reads it.
"""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {"build_faces": "build", "build_lsun": "build", "STAGE_FLOWS": "stages", "dedup_flow": "stages",
         "detect_flow": "stages", "identity_flow": "stages", "images_flow": "stages", "lsun_import_flow": "stages",
         "names_flow": "stages", "publish_flow": "stages", "report_flow": "stages", "train_flow": "stages"}


def __getattr__(name: str) -> Any:
    if name == "ALL_FLOWS":
        from .build import build_faces, build_lsun
        from .stages import STAGE_FLOWS

        return {**STAGE_FLOWS, "build-faces": build_faces, "build-lsun": build_lsun}
    if name in _FROM:
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module 'flows' has no attribute {name!r}")


__all__ = ["ALL_FLOWS", *_FROM]
