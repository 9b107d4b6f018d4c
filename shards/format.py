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

import functools
import json
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT_NAME = "wikifaces-shards"
# The newest version this code reads. Version 1: one image per LMDB value; version 2 adds blocks
# (`image.block` > 1), written only when a dataset uses them, so that block-free datasets stay
# readable by version-1 readers and a version-1 reader refuses a blocked one with a clear error.
FORMAT_VERSION = 2
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
BLOCK_MAGIC = b"WFB1"
_BLOCK_HEAD = struct.Struct("<I")
_BLOCK_SPAN = struct.Struct("<II")


class ShardError(Exception):
    """A dataset or shard is missing, incomplete, damaged or of an unknown format."""


def format_version(spec: ImageSpec) -> int:
    """The oldest format version that can hold `spec`: what a writer records, so that readers of
    that version read it."""
    return 2 if spec.block > 1 else 1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.lmdb"


def image_key(local: int) -> bytes:
    return b"%08d.img" % local


def meta_key(local: int) -> bytes:
    return b"%08d.json" % local


def block_key(first: int) -> bytes:
    """The key of the block whose first record (local index) is `first`."""
    return b"%08d.blk" % first


def pack_block(blobs: list[bytes]) -> bytes:
    """Several records' encoded images as one LMDB value (see the module docstring)."""
    head = 8 + 4 * (len(blobs) + 1)
    offsets = np.cumsum([head, *map(len, blobs)], dtype=np.uint64)
    if offsets[-1] >= 1 << 32:
        raise ShardError(f"a block of {len(blobs)} images holds {int(offsets[-1]):,} bytes, over 4 GiB")
    return b"".join([BLOCK_MAGIC, _BLOCK_HEAD.pack(len(blobs)), offsets.astype("<u4").tobytes(), *blobs])


def block_item(value: bytes | memoryview, j: int) -> bytes | memoryview:
    """The j-th image of a block value, as a slice of it (zero-copy for a memoryview)."""
    if value[:4] != BLOCK_MAGIC or len(value) < 8:
        raise ShardError("a block value does not start with its magic number: the shard is damaged")
    (n,) = _BLOCK_HEAD.unpack_from(value, 4)
    if j >= n or len(value) < 8 + 4 * (n + 1):
        raise ShardError(f"a block of {n} images has no image {j}: the shard is damaged")
    start, end = _BLOCK_SPAN.unpack_from(value, 8 + 4 * j)
    if not 8 + 4 * (n + 1) <= start <= end <= len(value):
        raise ShardError(f"image {j} of a block points outside it: the shard is damaged")
    return value[start:end]


class ImageSpec(BaseModel):
    """Shape and encoding shared by every record. height/width None means sizes vary."""

    model_config = ConfigDict(frozen=True)

    height: int | None = Field(default=None, ge=1)
    width: int | None = Field(default=None, ge=1)
    channels: Literal[3] = 3
    encoding: Encoding = "png"
    # records per LMDB value: 1, or a block (format_version 2). A block costs a random read nothing
    # (its value is read in place) and saves LMDB's rounding of every large value to whole pages.
    block: int = Field(default=1, ge=1, le=65_536)

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

    @model_validator(mode="after")
    def _blocks_need_version_2(self) -> Manifest:
        if self.image.block > 1 and self.format_version < 2:
            raise ValueError(f"image.block {self.image.block} needs format_version 2, the manifest says "
                             f"{self.format_version}")
        return self

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


@functools.cache
def decoder(encoding: str) -> Callable[[bytes | memoryview], np.ndarray]:
    """The decoder of one encoding: image bytes (or a view of them) to an RGB uint8 HWC array,
    ShardError when they are corrupt. Readers that know a dataset's encoding call it directly
    (no sniffing); the decoders release the GIL, so threads decode in parallel."""
    if encoding == "raw":
        return lambda data: raw_view(data).copy()
    if encoding == "qoi":
        import qoi

        def qoi_decode(data: bytes | memoryview) -> np.ndarray:
            try:
                return qoi.decode(data)
            except (ValueError, RuntimeError) as exc:
                raise ShardError(f"QOI bytes could not be decoded: {exc}") from None
        return qoi_decode
    if encoding == "jpeg":
        import simplejpeg  # libjpeg-turbo, without OpenCV's thread pool: scales across threads

        def jpeg_decode(data: bytes | memoryview) -> np.ndarray:
            try:
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
            except ValueError as exc:
                raise ShardError(f"JPEG bytes could not be decoded: {exc}") from None
        return jpeg_decode
    import cv2  # loaded on the first decode, so that `import shards` stays cheap

    def cv2_decode(data: bytes | memoryview) -> np.ndarray:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
        if arr is None:
            raise ShardError("image bytes could not be decoded")
        return arr
    return cv2_decode


def decode_image(data: bytes | memoryview) -> np.ndarray:
    """Decode PNG/JPEG/WebP/QOI/raw bytes to an RGB uint8 HWC array; raises ShardError if corrupt."""
    return decoder(sniff_encoding(data) or "png")(data)


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
