"""LSUN as released: an LMDB directory whose keys are 40-hex ids and whose values are WebP or
JPEG bytes (the README says JPEG; the exporter writes WebP), or a plain image folder. Both are
read as streams, in a deterministic order, so an import can resume by skipping what is done.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import lmdb
import numpy as np

from wikifaces.samples import available_photos, load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def is_lsun_lmdb(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "data.mdb").is_file()


def iter_lsun_lmdb(path: str | os.PathLike[str], skip: int = 0) -> Iterator[tuple[str, bytes]]:
    """(key, image bytes) in key order, with a cursor: the key list is never loaded."""
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=64)
    try:
        with env.begin(buffers=False) as txn, txn.cursor() as cur:
            if not cur.first():
                return
            if skip:
                # keys cannot be indexed, so skipping walks the cursor (fast: no values are read)
                for _ in range(skip):
                    if not cur.next():
                        return
            for key, value in cur:
                yield key.decode("ascii", "replace"), value
    finally:
        env.close()


def lsun_count(path: str | os.PathLike[str]) -> int:
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


def iter_image_folder(path: str | os.PathLike[str], skip: int = 0) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every image file, walking folders in sorted order, one
    folder's listing at a time. The key is the relative path (it is never written as a path)."""
    root = Path(path)
    seen = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(Path(e.path))
            elif e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                if seen >= skip:
                    yield str(Path(e.path).relative_to(root)), Path(e.path).read_bytes()
                seen += 1
        stack.extend(reversed(subdirs))


def iter_source(path: str | os.PathLike[str], skip: int = 0) -> Iterator[tuple[str, bytes]]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"LSUN source {p} does not exist")
    return iter_lsun_lmdb(p, skip) if is_lsun_lmdb(p) else iter_image_folder(p, skip)


def write_lsun_lmdb(out: str | os.PathLike[str], n: int, size: int = 256, fmt: str = "webp", seed: int = 0,
                    duplicates: float = 0.05, quality: int = 85) -> list[tuple[str, str]]:
    """A small LSUN-format LMDB (directory with data.mdb; 40-hex keys; WebP or JPEG values)
    made from real photographs shipped in installed packages: random crops with the shorter
    side at `size`, flips and brightness changes, plus a share of planted near-duplicates
    (re-encodings, slight crops and resizes of an earlier image).

    Returns the planted (duplicate key, original key) pairs, for tests and benchmarks."""
    rng = random.Random(seed)
    photos = [load_rgb(p) for _, p in available_photos(demo_only=False)]
    if not photos:
        raise RuntimeError("no packaged photographs are installed")
    Path(out).mkdir(parents=True, exist_ok=True)
    ext = {"webp": ".webp", "jpeg": ".jpg"}[fmt]
    flag = [cv2.IMWRITE_WEBP_QUALITY if fmt == "webp" else cv2.IMWRITE_JPEG_QUALITY]
    records: list[tuple[str, bytes]] = []
    originals: list[tuple[str, np.ndarray]] = []
    planted: list[tuple[str, str]] = []
    for i in range(n):
        if originals and rng.random() < duplicates:
            src_key, src = rng.choice(originals)
            img = _perturb(src, rng)
        else:
            src_key, img = None, _random_view(rng.choice(photos), size, rng)
        ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [flag[0], quality])
        assert ok
        key = hashlib.sha1(f"{seed}-{i}".encode()).hexdigest()
        records.append((key, buf.tobytes()))
        if src_key is None:
            originals.append((key, img))
        else:
            planted.append((key, src_key))
    env = lmdb.open(str(out), map_size=max(1 << 26, sum(len(v) for _, v in records) * 3), subdir=True)
    with env.begin(write=True) as txn:
        for key, value in records:
            txn.put(key.encode(), value)
    env.close()
    return planted


def _random_view(photo: np.ndarray, size: int, rng: random.Random) -> np.ndarray:
    h, w = photo.shape[:2]
    side = rng.randint(min(h, w) // 3, min(h, w))
    ch = min(h, int(side * rng.uniform(0.75, 1.0)))
    y, x = rng.randint(0, h - ch), rng.randint(0, w - side)
    img = photo[y : y + ch, x : x + side]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    scale = size / min(img.shape[:2])
    img = cv2.resize(np.ascontiguousarray(img), (max(size, round(img.shape[1] * scale)),
                                                 max(size, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    gain = rng.uniform(0.8, 1.2)
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _perturb(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """A near-duplicate: a slight crop and resize, a small brightness change."""
    h, w = img.shape[:2]
    c = rng.uniform(0.0, 0.05)
    y0, x0 = int(h * c * rng.random()), int(w * c * rng.random())
    out = img[y0 : h - int(h * c * rng.random()), x0 : w - int(w * c * rng.random())]
    out = cv2.resize(np.ascontiguousarray(out), (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(out.astype(np.float32) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
