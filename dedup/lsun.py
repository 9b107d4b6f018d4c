"""LSUN as released: an LMDB directory whose keys are 40-hex ids and whose values are WebP or
JPEG bytes (the README says JPEG; the exporter writes WebP), or a plain image folder. Both are
read as streams, in a deterministic order, so an import can resume by skipping what is done.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import lmdb

from wikifaces.core.errors import MissingInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def is_lsun_lmdb(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "data.mdb").is_file()


# Records read between unmapping the source: the pages read through a mapping count in the
# process's resident memory until it is unmapped (a whole pass over bedroom's 3M images would
# hold its ~45 GB there, the kernel dropping them only under pressure); reopening costs ~1 ms.
SOURCE_WINDOW = 1024


def iter_lsun_lmdb(path: str | os.PathLike[str], skip: int = 0, start_key: str | None = None
                   ) -> Iterator[tuple[str, bytes]]:
    """(key, image bytes) in key order, with a cursor: the key list is never loaded. The source
    is unmapped and opened again every `SOURCE_WINDOW` records, the cursor placed after the last
    key read. From `start_key` (which must be in the source) when given, else from the first."""
    after: bytes | None = None
    while True:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=64)
        try:
            with env.begin(buffers=False) as txn, txn.cursor() as cur:
                if after is None:
                    if start_key is not None:
                        if not cur.set_key(start_key.encode()):
                            raise RuntimeError(f"key {start_key} is no longer in {path}")
                    elif not cur.first():
                        return
                    # keys cannot be indexed, so skipping walks the cursor (fast: no values are read)
                    for _ in range(skip):
                        if not cur.next():
                            return
                elif not cur.set_range(after) or (cur.key() == after and not cur.next()):
                    return
                for n, (key, value) in enumerate(cur, start=1):
                    yield key.decode("ascii", "replace"), value
                    after = key
                    if n == SOURCE_WINDOW:
                        break
                else:
                    return
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
        raise MissingInput(f"LSUN source {p} does not exist")
    return iter_lsun_lmdb(p, skip) if is_lsun_lmdb(p) else iter_image_folder(p, skip)
