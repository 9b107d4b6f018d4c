"""Writing datasets of LMDB shards.

The writer rolls to a new shard by record count and by bytes, writes each shard under a
temporary name and renames it when it is complete, grows the LMDB map instead of failing
with MapFullError, and writes `manifest.json` last. With `mode="resume"` it keeps the
complete shards of an interrupted run and tells the caller how many records they hold, so
the caller can skip that much of its (deterministically ordered) input.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import lmdb
import numpy as np

from .files import atomic_write_text, fsync_dir, sha256_file
from .format import (
    COUNT_KEY,
    ENCODINGS,
    FORMAT_NAME,
    MANIFEST_NAME,
    META_KEY,
    SHARD_PATTERN,
    Encoding,
    ImageSpec,
    Manifest,
    Provenance,
    ShardError,
    ShardInfo,
    block_key,
    dumps_meta,
    encode_image,
    format_version,
    image_key,
    image_size,
    meta_key,
    pack_block,
    shard_name,
    sniff_encoding,
)

PROGRESS_NAME = ".progress.jsonl"
TMP_SUFFIX = ".tmp"
WriteMode = Literal["new", "overwrite", "resume"]

_MiB = 1 << 20


class _OpenShard:
    """One shard being written: its LMDB environment, open transaction and pending puts."""

    def __init__(self, final: Path, index: int, map_size: int, spec: ImageSpec) -> None:
        self.final = final
        self.tmp = final.with_name(final.name + TMP_SUFFIX)
        self.index = index
        self.spec = spec
        self.count = 0
        self.payload_bytes = 0
        self.map_size = map_size
        self.env = lmdb.open(
            str(self.tmp), subdir=False, map_size=map_size, lock=False, sync=False,
            metasync=False, map_async=False,
        )
        self.txn: lmdb.Transaction | None = None
        self.pending: list[tuple[bytes, bytes]] = []
        self.block: list[tuple[bytes, bytes]] = []  # (image, meta) of the block being filled

    def add(self, data: bytes, meta: bytes) -> None:
        """One record: put at once, or into the block, which is put when full. Keys go in sorted
        order (LMDB's append): a block's key (its first record) sorts before its records' metadata."""
        if self.spec.block == 1:
            self.put(image_key(self.count), data)
            self.put(meta_key(self.count), meta)
        else:
            self.block.append((data, meta))
        self.count += 1
        self.payload_bytes += len(data) + len(meta)
        if len(self.block) == self.spec.block:
            self.flush_block()

    def flush_block(self) -> None:
        if not self.block:
            return
        first = self.count - len(self.block)
        self.put(block_key(first), pack_block([d for d, _ in self.block]))
        for j, (_, meta) in enumerate(self.block):
            self.put(meta_key(first + j), meta)
        self.block.clear()

    def put(self, key: bytes, value: bytes) -> None:
        if self.txn is None:
            self.txn = self.env.begin(write=True)
        self.pending.append((key, value))
        try:
            self.txn.put(key, value, append=True)
        except lmdb.MapFullError:
            self._grow_and_replay()

    def _grow_and_replay(self) -> None:
        """Abort the open transaction, double the map and write its puts again."""
        if self.txn is not None:
            self.txn.abort()
        while True:
            self.map_size *= 2
            self.env.set_mapsize(self.map_size)
            self.txn = self.env.begin(write=True)
            try:
                for k, v in self.pending:
                    self.txn.put(k, v, append=True)
                return
            except lmdb.MapFullError:
                self.txn.abort()

    def commit(self) -> None:
        if self.txn is None:
            return
        try:
            self.txn.commit()
        except lmdb.MapFullError:
            self._grow_and_replay()
            self.txn.commit()
        self.txn = None
        self.pending.clear()

    def finish(self) -> ShardInfo:
        """Write the count entries, flush, close and rename into place."""
        self.flush_block()
        meta = {
            "format": FORMAT_NAME, "format_version": format_version(self.spec),
            "shard": self.index, "count": self.count, "encoding": self.spec.encoding, "block": self.spec.block,
        }
        self.put(COUNT_KEY, str(self.count).encode())
        self.put(META_KEY, json.dumps(meta).encode())
        self.commit()
        self.env.sync(True)
        self.env.close()
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return ShardInfo(
            file=self.final.name, count=self.count,
            bytes=self.final.stat().st_size, sha256=sha256_file(self.final),
        )

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self.txn is not None:
                self.txn.abort()
            self.env.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class ShardWriter:
    """Write records (RGB uint8 image + metadata with a unique "key") into a shard dataset.

    Use as a context manager: leaving the block normally writes the manifest; leaving it with
    an exception keeps the complete shards (for `mode="resume"`) and writes no manifest.
    `block` > 1 stores that many records' images in one LMDB value (format version 2): the same
    read speed, without LMDB's rounding of every value over ~2 kB up to whole 4 kB pages.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        name: str,
        image_size: tuple[int, int] | None,
        encoding: Encoding = "png",
        quality: int = 95,
        block: int = 1,
        max_records: int = 50_000,
        max_bytes: int = 1 << 30,
        parameters: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        mode: WriteMode = "new",
        check_keys: bool = True,
        commit_every: int = 1000,
        initial_map_size: int | None = None,
        code_version: str = "unknown",
    ) -> None:
        if not 1 <= max_records < 10**8:
            raise ValueError("max_records must be between 1 and 99,999,999 (keys have 8 digits)")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
        self.out_dir = Path(out_dir)
        self.name = name
        self.spec = ImageSpec(
            height=image_size[0] if image_size else None,
            width=image_size[1] if image_size else None,
            encoding=encoding,
            block=block,
        )
        self.quality = quality
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.parameters = dict(parameters or {})
        self.code_version = code_version  # of whatever wrote the records: the caller says
        self.summary: dict[str, Any] = dict(summary or {})
        self.check_keys = check_keys
        self.commit_every = commit_every
        # The map is a sparse reservation on Linux: size it for a full shard and let it grow.
        self.initial_map_size = initial_map_size or max(64 * _MiB, int(max_bytes * 1.6) + 16 * _MiB)
        self.shards: list[ShardInfo] = []
        self.count = 0
        self.resumed_count = 0
        self._keys: set[str] = set()
        self._open: _OpenShard | None = None
        self._closed = False
        self.manifest: Manifest | None = None
        self._prepare(mode)

    # -- set-up ---------------------------------------------------------------------------
    def _prepare(self, mode: WriteMode) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.out_dir / MANIFEST_NAME
        existing = sorted(p for p in self.out_dir.iterdir() if SHARD_PATTERN.match(p.name))
        leftovers = [p for p in self.out_dir.iterdir() if p.name.endswith((TMP_SUFFIX, TMP_SUFFIX + "-lock"))]
        if mode == "new":
            if manifest.exists():
                raise ShardError(
                    f"{self.out_dir} already holds a complete dataset; "
                    "use mode='overwrite' to replace it"
                )
            if existing or leftovers:
                raise ShardError(
                    f"{self.out_dir} holds shards of an interrupted run; "
                    "use mode='resume' to continue it or mode='overwrite' to start again"
                )
        elif mode == "overwrite":
            # Manifest first: from this moment nothing here looks complete.
            with contextlib.suppress(FileNotFoundError):
                manifest.unlink()
            for p in [*existing, *leftovers, self.out_dir / PROGRESS_NAME]:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            fsync_dir(self.out_dir)
        elif mode == "resume":
            if manifest.exists():
                raise ShardError(f"{self.out_dir} is already complete (it has {MANIFEST_NAME})")
            for p in leftovers:
                p.unlink()
            self._adopt(existing)
        else:
            raise ValueError(f"mode must be 'new', 'overwrite' or 'resume', not {mode!r}")

    def _adopt(self, existing: list[Path]) -> None:
        """Take over the complete shards of an interrupted run."""
        indices = [int(SHARD_PATTERN.match(p.name).group(1)) for p in existing]  # type: ignore[union-attr]
        if indices != list(range(len(indices))):
            raise ShardError(f"{self.out_dir}: complete shards are not numbered 0..n-1: {indices}")
        known: dict[str, ShardInfo] = {}
        progress = self.out_dir / PROGRESS_NAME
        if progress.exists():
            for line in progress.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    info = ShardInfo.model_validate_json(line)
                    known[info.file] = info
        from .reader import open_shard_env  # local: the reader imports nothing of the writer

        for path in existing:
            info = known.get(path.name)
            env = open_shard_env(path)
            with env.begin() as txn:
                raw = txn.get(COUNT_KEY)
                if raw is None:
                    raise ShardError(f"{path.name} has no {COUNT_KEY.decode()} entry; it is damaged")
                count = int(raw)
                written = json.loads(txn.get(META_KEY) or b"{}")
                if (written.get("encoding"), written.get("block", 1)) != (self.spec.encoding, self.spec.block):
                    raise ShardError(
                        f"{path.name} holds {written.get('encoding')} images in blocks of {written.get('block', 1)}; "
                        f"this run writes {self.spec.encoding} in blocks of {self.spec.block}: "
                        "resume with the same settings or use mode='overwrite'")
                if self.check_keys:
                    for i in range(count):
                        self._keys.add(json.loads(txn.get(meta_key(i)))["key"])
            if info is None or info.bytes != path.stat().st_size or info.count != count:
                info = ShardInfo(file=path.name, count=count, bytes=path.stat().st_size,
                                 sha256=sha256_file(path))
            self.shards.append(info)
        self.count = self.resumed_count = sum(s.count for s in self.shards)

    # -- writing ----------------------------------------------------------------------------
    def add(self, image: np.ndarray, meta: dict[str, Any]) -> int:
        """Encode and add one RGB uint8 HWC image; returns its global record index."""
        self._check_image(image)
        return self._put(encode_image(image, self.spec.encoding, self.quality), meta)

    def add_encoded(self, data: bytes, meta: dict[str, Any]) -> int:
        """Add already-encoded bytes (they must be in the dataset's encoding and size)."""
        kind = sniff_encoding(data)
        if kind != self.spec.encoding:
            raise ValueError(
                f"record {meta.get('key')!r}: bytes are {kind or 'not a known image format'}, "
                f"the dataset is {self.spec.encoding}"
            )
        if self.spec.height is not None:
            try:
                h, w = image_size(data)
            except Exception as exc:
                raise ValueError(f"record {meta.get('key')!r}: unreadable image header: {exc}") from exc
            if (h, w) != (self.spec.height, self.spec.width):
                raise ValueError(
                    f"record {meta.get('key')!r}: image is {h}x{w}, "
                    f"the dataset is {self.spec.height}x{self.spec.width}"
                )
        return self._put(bytes(data), meta)

    def _check_image(self, image: Any) -> None:
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy array, not {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"image must be uint8 (0..255), not {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
        if self.spec.height is not None and image.shape[:2] != (self.spec.height, self.spec.width):
            raise ValueError(
                f"image is {image.shape[0]}x{image.shape[1]}, "
                f"the dataset is {self.spec.height}x{self.spec.width}"
            )

    def _check_meta(self, meta: Any) -> bytes:
        if not isinstance(meta, dict):
            raise TypeError(f"metadata must be a dict, not {type(meta).__name__}")
        key = meta.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata needs a non-empty string 'key' (a stable record id); got {key!r}")
        if self.check_keys:
            if key in self._keys:
                raise ValueError(f"duplicate record key {key!r}")
            self._keys.add(key)
        try:
            return dumps_meta(meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"record {key!r}: metadata is not JSON-serialisable: {exc}") from exc

    def _put(self, data: bytes, meta: dict[str, Any]) -> int:
        if self._closed:
            raise ShardError("the writer is closed")
        meta_bytes = self._check_meta(meta)
        shard = self._open
        if shard is not None and (
            shard.count >= self.max_records
            or (shard.count and shard.payload_bytes + len(data) + len(meta_bytes) > self.max_bytes)
        ):
            self._finish_shard()
            shard = None
        if shard is None:
            index = len(self.shards)
            shard = self._open = _OpenShard(self.out_dir / shard_name(index), index, self.initial_map_size, self.spec)
        try:
            shard.add(data, meta_bytes)
            if shard.count % self.commit_every == 0:
                shard.commit()
        except lmdb.Error as exc:
            raise ShardError(f"writing {shard.tmp.name} failed: {exc}{storage_hint(self.out_dir)}") from exc
        self.count += 1
        return self.count - 1

    def _finish_shard(self) -> None:
        shard, self._open = self._open, None
        if shard is None:
            return
        try:
            info = shard.finish()
        except lmdb.Error as exc:
            shard.discard()
            raise ShardError(f"finishing {shard.tmp.name} failed: {exc}{storage_hint(self.out_dir)}") from exc
        self.shards.append(info)
        with open(self.out_dir / PROGRESS_NAME, "a") as fh:
            fh.write(info.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> Manifest:
        """Finish the last shard and write the manifest; returns it."""
        if self._closed:
            raise ShardError("the writer is already closed")
        self._finish_shard()
        manifest = Manifest(
            format_version=format_version(self.spec),
            name=self.name,
            count=self.count,
            image=self.spec,
            shards=self.shards,
            provenance=Provenance(code_version=self.code_version, parameters=self.parameters),
            summary=self.summary,
        )
        atomic_write_text(self.out_dir / MANIFEST_NAME, manifest.to_json())
        with contextlib.suppress(FileNotFoundError):
            (self.out_dir / PROGRESS_NAME).unlink()
        self._closed = True
        self.manifest = manifest
        return manifest

    def abort(self) -> None:
        """Drop the shard in progress; complete shards stay for a resume."""
        if self._open is not None:
            self._open.discard()
            self._open = None
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shards(
    records: Iterable[tuple[np.ndarray, dict[str, Any]]],
    out_dir: str | os.PathLike[str],
    **writer_options: Any,
) -> Manifest:
    """Write (image, metadata) pairs into a new dataset; see ShardWriter for the options."""
    with ShardWriter(out_dir, **writer_options) as writer:
        for image, meta in records:
            writer.add(image, meta)
    assert writer.manifest is not None
    return writer.manifest


def storage_hint(path: Path) -> str:
    """LMDB reports a full disk or a file-size limit as a bare I/O error: say what the storage
    looks like, so that the message points at the cause."""
    import resource
    import shutil

    hints = []
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(path).free
        hints.append(f"{free / 2**30:.1f} GiB free on its disk")
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        hints.append(f"a file-size limit (ulimit -f) of {soft:,} bytes applies")
    return (f" (is the disk full? {', '.join(hints)}; free space and rerun: finished shards and stages are kept, "
            "this dataset is not marked complete)")


def is_complete(path: str | os.PathLike[str]) -> bool:
    """A dataset is complete exactly when its manifest exists."""
    return (Path(path) / MANIFEST_NAME).is_file()
