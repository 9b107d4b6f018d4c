"""The shard format: names, keys, the manifest model and image codecs.

A dataset is a folder holding `manifest.json` and `shard-00000.lmdb`, `shard-00001.lmdb`, ...
Each shard is a single-file LMDB (`subdir=False`) with, for its records i = 0 .. count-1:

    b"%08d.img"  -> encoded image bytes (PNG, JPEG or WebP, one encoding per dataset)
    b"%08d.json" -> the record's metadata, UTF-8 JSON object with at least a string "key"
    b"__count__" -> the record count as ASCII digits (readers never scan a cursor)
    b"__meta__"  -> JSON: format, version, shard index, count, encoding

Global record index g lives in the shard s where offsets[s] <= g < offsets[s+1], under local
key g - offsets[s]; offsets come from the manifest's per-shard counts. `manifest.json` is
written last: its presence marks the dataset complete.
"""

from __future__ import annotations

import json
import re
import struct
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMAT_NAME = "wikifaces-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.lmdb$")
COUNT_KEY = b"__count__"
META_KEY = b"__meta__"

Encoding = Literal["png", "jpeg", "webp", "qoi", "raw"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)
EXTENSIONS: dict[str, str] = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "qoi": ".qoi", "raw": ".raw"}
# raw: these 4 bytes, height and width (uint16, little-endian), then the pixels, uint8 HWC RGB
RAW_MAGIC = b"WFR1"
RAW_HEADER = 8


class ShardError(Exception):
    """A dataset or shard is missing, incomplete, damaged or of an unknown format."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.lmdb"


def image_key(local: int) -> bytes:
    return b"%08d.img" % local


def meta_key(local: int) -> bytes:
    return b"%08d.json" % local


class ImageSpec(BaseModel):
    """Shape and encoding shared by every record. height/width None means sizes vary."""

    model_config = ConfigDict(frozen=True)

    height: int | None = Field(default=None, ge=1)
    width: int | None = Field(default=None, ge=1)
    channels: Literal[3] = 3
    encoding: Encoding = "png"

    @field_validator("encoding", mode="before")
    @classmethod
    def _known_encoding(cls, v: Any) -> Any:
        if v not in ENCODINGS:
            raise ValueError(f"encoding {v!r} is unknown to this reader (it reads {', '.join(ENCODINGS)}): "
                             "a newer wikifaces wrote this dataset; upgrade to read it")
        return v


class ShardInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    file: str
    count: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not SHARD_PATTERN.match(v):
            raise ValueError(f"shard file name {v!r} is not of the form shard-00000.lmdb")
        return v


class Provenance(BaseModel):
    code_version: str
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    parameters: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    """The dataset's table of contents; the contract other projects read."""

    format: Literal["wikifaces-shards"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    name: str
    count: int = Field(ge=0)
    image: ImageSpec
    shards: list[ShardInfo]
    provenance: Provenance
    summary: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > FORMAT_VERSION:
            raise ValueError(
                f"format_version {v} is newer than this reader understands ({FORMAT_VERSION}); "
                "upgrade wikifaces"
            )
        return v

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def encode_image(image: np.ndarray, encoding: Encoding, quality: int = 95) -> bytes:
    """Encode an RGB uint8 HWC array. `raw` and `qoi` are lossless and decode fastest (see the
    README's table); `jpeg` is the smallest."""
    if encoding == "raw":
        h, w = image.shape[:2]
        return RAW_MAGIC + struct.pack("<HH", h, w) + np.ascontiguousarray(image, np.uint8).tobytes()
    if encoding == "qoi":
        import qoi

        return qoi.encode(np.ascontiguousarray(image, np.uint8))
    import cv2  # here, not at the top: `import shards` stays cheap for readers that never encode

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = {
        "png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
        # 4:4:4: chroma subsampling visibly smears colour in 32-128 px images.
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality,
                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
    }[encoding]
    ok, buf = cv2.imencode(EXTENSIONS[encoding], bgr, params)
    if not ok:
        raise ShardError(f"OpenCV could not encode a {image.shape} image as {encoding}")
    return buf.tobytes()


def raw_view(data: bytes | memoryview) -> np.ndarray:
    """The pixels of raw bytes as an HxWx3 view of `data` itself (no copy: copy it out before a
    read transaction ends, as `decode_image` and `Dataset.read_images` do)."""
    if len(data) < RAW_HEADER:
        raise ShardError("raw image bytes are shorter than their header")
    h, w = struct.unpack("<HH", bytes(data[4:RAW_HEADER]))
    if len(data) != RAW_HEADER + h * w * 3:
        raise ShardError(f"raw image bytes hold {len(data) - RAW_HEADER} pixel bytes, not {h}x{w}x3")
    return np.frombuffer(data, np.uint8, h * w * 3, RAW_HEADER).reshape(h, w, 3)


def decode_image(data: bytes | memoryview) -> np.ndarray:
    """Decode PNG/JPEG/WebP/QOI/raw bytes to an RGB uint8 HWC array; raises ShardError if corrupt."""
    head = bytes(data[:4])
    if head == RAW_MAGIC:
        return raw_view(data).copy()
    if head == b"qoif":
        import qoi

        try:
            return qoi.decode(bytes(data))
        except (ValueError, RuntimeError) as exc:
            raise ShardError(f"QOI bytes could not be decoded: {exc}") from None
    import cv2  # loaded on the first decode (then a dict look-up), so that `import shards` stays cheap
    import simplejpeg

    if data[:3] == b"\xff\xd8\xff":
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as exc:
            raise ShardError(f"JPEG bytes could not be decoded: {exc}") from None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if arr is None:
        raise ShardError("image bytes could not be decoded")
    return arr


def sniff_encoding(data: bytes | memoryview) -> str | None:
    """The encoding of image bytes from their magic number, or None."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"qoif":
        return "qoi"
    if head[:4] == RAW_MAGIC:
        return "raw"
    return None


def image_size(data: bytes | memoryview) -> tuple[int, int]:
    """(height, width) from the header alone."""
    head = bytes(data[:RAW_HEADER + 6])
    if head[:4] == RAW_MAGIC:
        return struct.unpack("<HH", head[4:RAW_HEADER])
    if head[:4] == b"qoif":
        w, h = struct.unpack(">II", head[4:12])
        return h, w
    import io

    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as im:
        return im.size[1], im.size[0]


def dumps_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
