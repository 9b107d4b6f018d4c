"""Phase one of dedup: perceptual hashes of every record, computed once and saved.

Each record is decoded as grey at full size (for the pixel checksum and its resolution),
shrunk with area averaging to a small square, then hashed with imagehash (phash, dhash, whash
or ahash, 64 bits). Beside that code, two re-framed copies of the picture are hashed too
(`PROBES`: its centre enlarged 1.1x, and its top enlarged 1.125x): a crop, a border or a caption
bar under the picture moves the whole picture's hash far, but brings one of these close to the
other picture's own hash, so the search can propose the pair and verification can judge it.

Work is split into parts of consecutive records; each part is hashed in a worker process
straight from the shards and saved as soon as it is done, so a killed run resumes at the first
missing part. A new threshold never rehashes: the search reads the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import imagehash
import numpy as np
from PIL import Image

from shards import dataset_fingerprint, open_dataset
from wikifaces.core.executor import Executor, fan_out
from wikifaces.core.files import atomic_open
from wikifaces.core.identity import stage_key

log = logging.getLogger("wikifaces.dedup")

OK, CORRUPT = 0, 1
PART_SIZE = 20_000
_FUNCS: dict[str, Callable[..., imagehash.ImageHash]] = {
    "phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash, "ahash": imagehash.average_hash,
}
# Re-framed copies hashed beside each picture: (name, enlargement, vertical anchor 0 top .. 1 bottom).
# Chosen with bench/dedup_verify.py: centre 1.1x finds crops of 5-10 % and borders, top 1.125x a
# caption bar of 1/8 of the height under the picture.
PROBES: tuple[tuple[str, float, float], ...] = (("centre", 1.1, 0.5), ("top", 1.125, 0.0))


@dataclass
class Hashes:
    """Per-record arrays, aligned with the dataset's record indices."""

    codes: np.ndarray  # uint64 (N, W)
    pixels: np.ndarray  # int64: width * height
    status: np.ndarray  # int8: OK or CORRUPT
    sha_bytes: np.ndarray  # S16: first half of the sha256 of the encoded bytes
    sha_pixels: np.ndarray  # S16: of the decoded grey pixels and their shape
    method: str
    parts_computed: int = 0  # how many parts this run hashed (the rest were reused)
    probes: np.ndarray | None = None  # uint64 (N, len(PROBES)): the re-framed copies' codes; None: not hashed

    def __len__(self) -> int:
        return len(self.pixels)

    def save(self, path: str | os.PathLike[str]) -> None:
        extra = {} if self.probes is None else {"probes": self.probes}
        with atomic_open(path) as fh:
            np.savez(fh, codes=self.codes, pixels=self.pixels, status=self.status, sha_bytes=self.sha_bytes,
                     sha_pixels=self.sha_pixels, method=np.array(self.method), **extra)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Hashes:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["codes"], z["pixels"], z["status"], z["sha_bytes"], z["sha_pixels"], str(z["method"]),
                       probes=z["probes"] if "probes" in z.files else None)

    @classmethod
    def concat(cls, parts: list[Hashes]) -> Hashes:
        probes = None if any(p.probes is None for p in parts) else np.concatenate([p.probes for p in parts])
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("codes", "pixels", "status", "sha_bytes", "sha_pixels")), parts[0].method, probes=probes)


def _bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """Flattened bool hash bits (most significant first, as imagehash prints them) as uint64 words."""
    flat = np.asarray(bits, dtype=bool).ravel()
    words = np.packbits(flat).view(">u8").astype(np.uint64)
    return words


def hash_bytes(data: bytes, method: str = "phash") -> tuple[np.ndarray | None, int, bytes, bytes, str]:
    """(code words or None, pixels, sha256[:16] of bytes, of pixels, error) for one encoded image."""
    code, _, pixels, sha_b, sha_p, error = hash_record(data, method, probes=False)
    return code, pixels, sha_b, sha_p, error


def hash_record(data: bytes, method: str = "phash", probes: bool = True
                ) -> tuple[np.ndarray | None, np.ndarray | None, int, bytes, bytes, str]:
    """(code words or None, the re-framed copies' codes (len(PROBES),) or None, pixels, sha256[:16]
    of bytes, of pixels, error) for one encoded image."""
    sha_b = hashlib.sha256(data).digest()[:16]
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None or grey.size == 0:
        return None, None, 0, sha_b, b"", "the image does not decode"
    h, w = grey.shape
    sha_p = hashlib.sha256(grey.tobytes() + f"{h}x{w}".encode()).digest()[:16]
    code = hash_grey(grey, method)
    framed = np.concatenate([hash_grey(reframe(grey, z, anchor), method) for _, z, anchor in PROBES]) if probes \
        else None
    return code, framed, h * w, sha_b, sha_p, ""


def hash_grey(grey: np.ndarray, method: str = "phash") -> np.ndarray:
    """The code words of a grey picture: area-averaged to 64 px square, then imagehash's `method`."""
    small = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    return _bits_to_uint64(_FUNCS[method](Image.fromarray(small), hash_size=8).hash)


def reframe(img: np.ndarray, enlarge: float, anchor: float = 0.5) -> np.ndarray:
    """The part of a picture that fills the frame when it is enlarged `enlarge` times: centred
    across, at `anchor` down (0 its top, 0.5 its middle, 1 its bottom)."""
    h, w = img.shape[:2]
    ch, cw = max(1, round(h / enlarge)), max(1, round(w / enlarge))
    y, x = round((h - ch) * anchor), (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def hash_part(dataset: str, start: int, stop: int, method: str, probes: bool = True
              ) -> tuple[Hashes, list[dict[str, Any]]]:
    """Hash records start..stop-1 of a dataset (runs in a worker process); with `probes`, the
    re-framed copies too."""
    cv2.setNumThreads(1)
    ds = open_dataset(dataset)
    n = stop - start
    codes = np.zeros((n, 1), np.uint64)
    framed_codes = np.zeros((n, len(PROBES)), np.uint64) if probes else None
    pixels = np.zeros(n, np.int64)
    status = np.zeros(n, np.int8)
    sha_b = np.zeros(n, "S16")
    sha_p = np.zeros(n, "S16")
    rejected = []
    for i, data, meta in ds.iter_encoded(start, stop):
        k = i - start
        code, framed, pixels[k], sha_b[k], sha_p[k], error = hash_record(data, method, probes)
        if code is None:
            status[k] = CORRUPT
            rejected.append({"index": i, "key": meta.get("key"), "status": "corrupt", "reason": error})
        else:
            codes[k] = code
            if framed_codes is not None:
                framed_codes[k] = framed
    ds.close()
    return Hashes(codes, pixels, status, sha_b, sha_p, method, probes=framed_codes), rejected


@dataclass
class HashPlan:
    dataset: str
    method: str
    out_dir: Path
    parts_dir: Path
    spans: list[tuple[int, int]]
    names: list[Path]
    probes: bool = True

    @property
    def todo(self) -> list[tuple[int, int, str]]:
        """The parts not hashed yet (a killed run left the others), as (start, stop, path)."""
        return [(*self.spans[k], str(p)) for k, p in enumerate(self.names) if not p.exists()]


def plan_hashing(dataset: str | os.PathLike[str], out_dir: str | os.PathLike[str], method: str = "phash",
                 part_size: int = PART_SIZE, probes: bool = True) -> HashPlan:
    if method not in _FUNCS:
        raise ValueError(f"hash method must be one of {sorted(_FUNCS)}, not {method!r}")
    n = len(open_dataset(dataset))
    out = Path(out_dir)
    # parts are valid for this dataset, this method (with or without the re-framed copies) and this code only
    what = f"{method}:{dataset_fingerprint(dataset)}" + ("" if probes else ":no-probes")
    key = hashlib.sha256(stage_key(what).encode()).hexdigest()[:16]
    parts_dir = out / f"hash-parts-{method}-{key}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    spans = [(a, min(n, a + part_size)) for a in range(0, n, part_size)]
    names = [parts_dir / f"part-{k:05d}.npz" for k in range(len(spans))]
    return HashPlan(str(dataset), method, out, parts_dir, spans, names, probes)


def hash_part_file(part: tuple[int, int, str], dataset: str, method: str, probes: bool = True) -> str:
    """Hash records start..stop-1 and save them (and the unreadable ones) at `path`: a part of
    fan-out whose result is a file, not a payload."""
    start, stop, path = part
    hashes, rejected = hash_part(dataset, start, stop, method, probes)
    target = Path(path)
    with atomic_open(target.with_suffix(".rejected.jsonl"), "w") as fh:
        for row in rejected:
            fh.write(_json(row) + "\n")
    hashes.save(target)  # last: its presence marks the part done
    return str(target)


def finish_hashing(plan: HashPlan) -> Hashes:
    """Join the parts into `hashes-<method>.npz`, with the unreadable records beside it."""
    final = plan.out_dir / f"hashes-{plan.method}.npz"
    if not plan.names:
        hashes = Hashes(np.zeros((0, 1), np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int8),
                        np.zeros(0, "S16"), np.zeros(0, "S16"), plan.method,
                        probes=np.zeros((0, len(PROBES)), np.uint64) if plan.probes else None)
    else:
        missing = [p.name for p in plan.names if not p.exists()]
        if missing:
            raise RuntimeError(f"hash parts missing: {', '.join(missing[:5])}")
        hashes = Hashes.concat([Hashes.load(p) for p in plan.names])
    hashes.save(final)
    rejected_rows = [line for p in plan.names for line in p.with_suffix(".rejected.jsonl").read_text().splitlines()]
    with atomic_open(plan.out_dir / f"hash-rejected-{plan.method}.jsonl", "w") as fh:
        fh.write("".join(line + "\n" for line in rejected_rows))
    for p in plan.parts_dir.iterdir():
        p.unlink()
    plan.parts_dir.rmdir()
    return hashes


def hash_images(dataset: str | os.PathLike[str], out_dir: str | os.PathLike[str], method: str = "phash",
                workers: int | None = None, part_size: int = PART_SIZE, progress: bool = True,
                executor: Executor | None = None, probes: bool = True) -> Hashes:
    """Hash every record of a shard dataset into `out_dir/hashes-<method>.npz` (returned), in parts
    through the executor (local processes by default); with `probes`, the re-framed copies too.
    Parts already hashed for this dataset, method and code are reused, so a killed run resumes."""
    plan = plan_hashing(dataset, out_dir, method, part_size, probes)
    todo = plan.todo
    fan_out(executor, hash_part_file, todo, plan.dataset, method, probes, on_result=lambda path: None,
            label=f"hashing ({method})", progress=progress, workers=workers)
    hashes = finish_hashing(plan)
    hashes.parts_computed = len(todo)
    return hashes


def _json(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def centre_crop(data: bytes, size: int = 32) -> np.ndarray | None:
    """A centre crop, `size` pixels square, in colour: the autoencoder's input."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if img is None:
        return None
    h, w = img.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(img[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


