"""Reading shard datasets: lazy, read-only, lock-free, safe across processes.

Importing this module loads neither torch nor prefect, so any project can read our
datasets with numpy, OpenCV and lmdb alone.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import lmdb
import numpy as np
import orjson
from pydantic import ValidationError

from .format import (
    COUNT_KEY,
    MANIFEST_NAME,
    SHARD_PATTERN,
    Manifest,
    ShardError,
    block_item,
    block_key,
    decoder,
    image_key,
    meta_key,
    raw_view,
)

# lmdb refuses to open one path twice in a process, so environments are shared per process
# and keyed by (real path); the inode tells a replaced file from the one we mapped.
_ENVS: dict[str, tuple[int, lmdb.Environment]] = {}
_ENVS_PID = os.getpid()
# Open Dataset objects per shard path: one closing must not unmap what another is reading
# (datasets opened in threads of one process share the environment).
_USERS: dict[str, int] = {}
_USERS_LOCK = threading.Lock()


def open_shard_env(path: str | os.PathLike[str]) -> lmdb.Environment:
    """A read-only, lock-free environment for one shard file, shared within this process."""
    global _ENVS_PID
    if os.getpid() != _ENVS_PID:  # a forked child must not use its parent's handles
        _ENVS.clear()
        _USERS.clear()
        _ENVS_PID = os.getpid()
    real = os.path.realpath(path)
    try:
        ino = os.stat(real).st_ino
    except FileNotFoundError:
        raise ShardError(f"shard file {Path(path).name} is missing from {Path(path).parent}") from None
    cached = _ENVS.get(real)
    if cached is not None:
        if cached[0] == ino:
            return cached[1]
        cached[1].close()
        del _ENVS[real]
    try:
        env = lmdb.open(
            real, subdir=False, readonly=True, lock=False, readahead=False,
            max_readers=2048, max_spare_txns=4,
        )
    except lmdb.Error as exc:
        raise ShardError(f"shard {Path(path).name} cannot be opened as LMDB: {exc}") from exc
    _ENVS[real] = (ino, env)
    return env


def image_value(txn: lmdb.Transaction, local: int, block: int, blocks: dict[int, Any] | None = None
                ) -> bytes | memoryview | None:
    """A record's encoded image bytes in an open transaction (a slice of its block's value when
    the dataset has blocks; zero-copy in a `buffers=True` transaction), or None when absent.
    `blocks`, a dict kept for this transaction, saves looking a block up again for its next record."""
    if block == 1:
        return txn.get(image_key(local))
    first = local - local % block
    value = blocks.get(first) if blocks is not None else None
    if value is None:
        value = txn.get(block_key(first))
        if value is None:
            return None
        if blocks is not None:
            blocks[first] = value
    return block_item(value, local % block)


def close_shard_env(path: str | os.PathLike[str]) -> None:
    """Unmap a shard, unless an open Dataset is reading it (it closes the mapping when it closes)."""
    real = os.path.realpath(path)
    if _USERS.get(real, 0) > 0:
        return
    cached = _ENVS.pop(real, None)
    if cached is not None:
        cached[1].close()


# Records a sequential pass reads between unmapping them (`Dataset.release`): ~30 MB of 128 px
# face crops; mapping a shard again takes well under a millisecond.
PASS_WINDOW = 1024

_POOL: tuple[int, int, ThreadPoolExecutor] | None = None
_CPUS = os.cpu_count() or 1  # asked once: it reads /sys, ~50 us a call here


def _decode_pool(workers: int) -> ThreadPoolExecutor:
    """A persistent per-process thread pool: starting threads per batch costs more than it saves."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < workers:
        _POOL = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="shards-decode"))
    return _POOL[2]


class Record(NamedTuple):
    """One record: an RGB uint8 HxWx3 image and its metadata."""

    image: np.ndarray
    meta: dict[str, Any]


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of a complete dataset, with a clear error for anything else."""
    root = Path(path)
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        if not root.exists():
            raise ShardError(f"no dataset at {root}: the folder does not exist")
        if any(SHARD_PATTERN.match(p.name) or p.name.endswith(".tmp") for p in root.iterdir()):
            raise ShardError(
                f"{root} is incomplete: it has shards but no {MANIFEST_NAME} "
                "(the writer was interrupted; rerun the stage to resume it)"
            )
        raise ShardError(f"{root} is not a wikifaces dataset: no {MANIFEST_NAME}")
    try:
        return Manifest.model_validate_json(mpath.read_bytes())
    except ValidationError as exc:
        raise ShardError(f"{mpath} is not a valid manifest: {exc}") from exc


class Dataset(Sequence[Record]):
    """A complete shard dataset. `len(ds)`, `ds[i]` -> Record(image, meta), iteration.

    Shards are opened on first use in each process; pickling (e.g. into DataLoader
    workers) drops the open handles and the receiving process reopens its own.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        counts = [s.count for s in self.manifest.shards]
        self._offsets = [0]
        for c in counts:
            self._offsets.append(self._offsets[-1] + c)
        if self._offsets[-1] != self.manifest.count:
            raise ShardError(
                f"{self.path}/{MANIFEST_NAME} is inconsistent: shard counts sum to "
                f"{self._offsets[-1]}, count says {self.manifest.count}"
            )
        self._envs: list[lmdb.Environment | None] = [None] * len(counts)
        self._pid = os.getpid()
        self._block = self.manifest.image.block
        self._encoding = self.manifest.image.encoding  # decoder(...) is cached; closures would not pickle

    # -- plumbing -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_envs"] = [None] * len(self._envs)
        return state

    def _env(self, shard: int) -> lmdb.Environment:
        if self._pid != os.getpid():
            self._envs = [None] * len(self._envs)
            self._pid = os.getpid()
        env = self._envs[shard]
        if env is None:
            path = self.path / self.manifest.shards[shard].file
            with _USERS_LOCK:
                env = self._envs[shard] = open_shard_env(path)
                real = os.path.realpath(path)
                _USERS[real] = _USERS.get(real, 0) + 1
        return env

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, local index) of a global record index; negative indices count from the end."""
        n = self.manifest.count
        if not -n <= index < n:
            raise IndexError(f"record {index} out of range for a dataset of {n}")
        if index < 0:
            index += n
        shard = bisect.bisect_right(self._offsets, index) - 1
        return shard, index - self._offsets[shard]

    def _get(self, txn: lmdb.Transaction, key: bytes, shard: int) -> bytes:
        value = txn.get(key)
        if value is None:
            self._missing(shard, key.decode())
        return value

    def _image(self, txn: lmdb.Transaction, local: int, shard: int, blocks: dict[int, Any] | None = None
               ) -> bytes | memoryview:
        value = image_value(txn, local, self._block, blocks)
        if value is None:
            self._missing(shard, f"the image of record {local}")
        return value

    def _missing(self, shard: int, what: str) -> None:
        raise ShardError(
            f"{self.manifest.shards[shard].file} has no entry for {what}: "
            "the shard is damaged or does not match the manifest (run `wikifaces verify`)"
        )

    # -- the public API -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.manifest.count

    def __getitem__(self, index: int) -> Record:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]  # type: ignore[return-value]
        shard, local = self.locate(index)
        with self._env(shard).begin(buffers=True) as txn:  # values read in place from the map
            image = decoder(self._encoding)(self._image(txn, local, shard))
            meta = orjson.loads(self._get(txn, meta_key(local), shard))
        return Record(image, meta)

    def __iter__(self) -> Iterator[Record]:
        decode = decoder(self._encoding)
        for _, data, meta in self.iter_encoded():
            yield Record(decode(data), meta)

    def read_bytes(self, index: int) -> bytes:
        """The encoded image bytes of a record, as stored."""
        shard, local = self.locate(index)
        with self._env(shard).begin(buffers=True) as txn:
            return bytes(self._image(txn, local, shard))

    def read_meta(self, index: int) -> dict[str, Any]:
        shard, local = self.locate(index)
        with self._env(shard).begin(buffers=True) as txn:
            return orjson.loads(self._get(txn, meta_key(local), shard))

    def _pass(self) -> Dataset:
        """A handle of its own for a pass: what it releases is never what this dataset (or a
        thread reading through it) has mapped, since each open handle counts as a user."""
        view = copy.copy(self)
        view._envs, view._pid = [None] * len(self._envs), os.getpid()
        return view

    def iter_at(self, indices: Iterable[int], images: bool = True
                ) -> Iterator[tuple[int, bytes | None, dict[str, Any]]]:
        """(index, encoded bytes, metadata) of the given records in the order given (bytes None
        when `images` is false): a long pass over a subset (a kept list, the records of clusters)
        or all of it. It reads through a handle of its own, one transaction per shard and window,
        and unmaps what it read every `PASS_WINDOW` records (see `release`), so its resident
        memory stays that of a window, not of the data read."""
        view, it, offsets, n = self._pass(), iter(indices), self._offsets, len(self)
        try:
            while window := list(itertools.islice(it, PASS_WINDOW)):
                with contextlib.ExitStack() as stack:
                    txns: dict[int, Any] = {}
                    blocks: dict[int, dict[int, Any]] = {}  # each block looked up once a window
                    lo = hi = shard = 0
                    for index in window:
                        if not lo <= index < hi:  # another shard (or a negative index): located
                            shard, _ = self.locate(int(index))
                            lo, hi = offsets[shard], offsets[shard + 1]
                            if shard not in txns:
                                txns[shard] = stack.enter_context(view._env(shard).begin(buffers=True))
                                blocks[shard] = {}
                        local, txn = int(index) % n - lo, txns[shard]
                        data = bytes(view._image(txn, local, shard, blocks[shard])) if images else None
                        yield local + lo, data, orjson.loads(view._get(txn, meta_key(local), shard))
                view.release()
        finally:
            view.close()

    def iter_encoded(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes, dict]]:
        """(index, encoded bytes, metadata) of records start..stop-1 in order, unmapped as it goes
        (`iter_at`)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self.iter_at(range(max(start, 0), stop))  # type: ignore[return-value]

    def iter_meta(self) -> Iterator[dict[str, Any]]:
        """Every record's metadata in order, without touching image bytes (`iter_at`)."""
        return (meta for _, _, meta in self.iter_at(range(len(self)), images=False))

    def where(self, key: str, value: Any) -> np.ndarray:
        """Indices of the records whose metadata has `key` equal to `value` (e.g. `where("split",
        "train")` on a dataset published with --split-by-person); reads metadata only."""
        return np.asarray([i for i, m in enumerate(self.iter_meta()) if m.get(key) == value], dtype=np.int64)

    def read_images(self, indices: Sequence[int] | np.ndarray, threads: int | None = None) -> np.ndarray:
        """Decode many records of a fixed-size dataset into one (N, H, W, 3) uint8 array.

        Decoding runs in a thread pool (the decoders release the GIL), straight from the memory map:
        one transaction per shard, open until the batch is decoded.
        """
        spec = self.manifest.image
        if spec.height is None or spec.width is None:
            raise ShardError("read_images needs a dataset of one image size; this one has several")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and not -n <= int(idx.min()) <= int(idx.max()) < n:
            raise IndexError(f"indices {int(idx.min())}..{int(idx.max())} out of range for a dataset of {n}")
        idx = np.where(idx < 0, idx + n, idx)
        offsets = np.asarray(self._offsets)
        shards = np.searchsorted(offsets, idx, side="right") - 1
        local, shard_of = (idx - offsets[shards]).tolist(), shards.tolist()
        out = np.empty((len(idx), spec.height, spec.width, 3), np.uint8)
        with contextlib.ExitStack() as stack:  # open until decoded: the views below point into the map
            txns = {shard: stack.enter_context(self._env(shard).begin(buffers=True)) for shard in set(shard_of)}
            blocks: dict[int, dict[int, Any]] = {shard: {} for shard in txns}  # each block looked up once
            views = [self._image(txns[s], i, s, blocks[s]) for s, i in zip(shard_of, local, strict=True)]
            if spec.encoding == "raw":  # no decoding: one copy from the map into the batch
                for pos, view in enumerate(views):
                    out[pos] = raw_view(view)
                return out
            decode = decoder(spec.encoding)

            def work(span: range) -> None:
                for pos in span:
                    out[pos] = decode(views[pos])

            # Looked up first, then decoded in threads: LMDB's look-ups let go of the GIL for so
            # short a time that, interleaved with decoding, the threads would queue on it instead.
            workers = min(threads or _CPUS, max(1, len(idx) // 32))
            if workers <= 1:
                work(range(len(idx)))
            else:
                step = -(-len(idx) // workers)
                spans = [range(a, min(a + step, len(idx))) for a in range(0, len(idx), step)]
                list(_decode_pool(workers).map(work, spans))
        return out

    def release(self) -> None:
        """Unmap the shards this dataset has open, unless another open dataset uses them; the
        dataset stays usable and maps them again when next read. The pages a process has read
        through a mapping count in its resident memory until it is unmapped (the kernel may drop
        them, but RSS grows with the data read): a long pass over a large dataset calls this now
        and then (the sequential iterators do), a training loop that reads it again does not.
        Like `close`, not while another thread is reading through this same dataset object."""
        self.close()

    def close(self) -> None:
        """Release this dataset's handles; a shard's mapping is closed when no open dataset uses it.
        A closed dataset opens them again when read (see `release`)."""
        with _USERS_LOCK:
            for shard, env in zip(self.manifest.shards, self._envs, strict=True):
                if env is None or self._pid != os.getpid():
                    continue
                real = os.path.realpath(self.path / shard.file)
                _USERS[real] = _USERS.get(real, 1) - 1
                if _USERS[real] <= 0:
                    _USERS.pop(real, None)
                    close_shard_env(real)  # no user left: unmapped
            self._envs = [None] * len(self._envs)

    def __repr__(self) -> str:
        s = self.manifest.image
        size = f"{s.height}x{s.width}" if s.height else "mixed sizes"
        blocks = f" in blocks of {s.block}" if s.block > 1 else ""
        return (f"Dataset({str(self.path)!r}, name={self.manifest.name!r}, records={len(self)}, "
                f"{size} {s.encoding}{blocks}, shards={len(self._envs)})")


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a complete dataset folder (one with manifest.json)."""
    return Dataset(path)


def shard_count(path: str | os.PathLike[str]) -> int:
    """The record count a shard file itself declares."""
    with open_shard_env(path).begin() as txn:
        raw = txn.get(COUNT_KEY)
    if raw is None:
        raise ShardError(f"{Path(path).name} has no {COUNT_KEY.decode()} entry; it is damaged")
    return int(raw)
