"""JSON-lines tables: the row-per-item outputs of every stage.

A stage appends rows to a journal as items finish (flushed per row, so a SIGKILL loses at
most the row being written) and, when it completes, rewrites the final table atomically,
one row per item key, in a deterministic order.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from wikifaces.core.files import atomic_open


def read_jsonl(path: str | os.PathLike[str], missing_ok: bool = True) -> Iterator[dict[str, Any]]:
    """Rows of a JSON-lines file, streamed (a table of millions of rows is never held). A torn
    last line (a killed writer) is skipped; a bad line anywhere else is an error, because it
    means the file was damaged, not interrupted."""
    for _, row in read_jsonl_at(path, missing_ok):
        yield row


def read_jsonl_at(path: str | os.PathLike[str], missing_ok: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset, row) of a JSON-lines file, streamed, by `read_jsonl`'s rules."""
    p = Path(path)
    if not p.exists():
        if missing_ok:
            return
        raise FileNotFoundError(p)
    offset = 0
    with p.open("rb") as fh:  # lines end at b"\n" only, as we write them (U+2028 inside a value is no break)
        for n, line in enumerate(fh, 1):
            at, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if not line.endswith(b"\n"):
                    return  # torn final line of a killed writer
                raise ValueError(f"{p}: line {n} is not valid JSON") from None
            yield at, row


class BytesColumn:
    """Strings gathered into a fixed-width bytes array a chunk at a time (a Python list of them
    would hold ~80 bytes a string until the end): a column of millions of keys or sha256s."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._open: list[bytes] = []

    def add(self, value: str) -> None:
        self._open.append(value.encode())
        if len(self._open) == 4096:
            self._chunks.append(np.array(self._open, dtype="S"))
            self._open = []

    def array(self) -> np.ndarray:
        if self._open:
            self._chunks.append(np.array(self._open, dtype="S"))
            self._open = []
        return np.concatenate(self._chunks) if self._chunks else np.empty(0, "S1")


class _IndexedFile(NamedTuple):
    path: Path
    group: Callable[[dict[str, Any]], str]
    keep: Callable[[dict[str, Any]], bool] | None
    hashes: np.ndarray  # sorted, a row's group hash each
    offsets: np.ndarray  # the rows' byte offsets, in the same order


class RowIndex:
    """Where each group's rows lie in JSON-lines files, 16 bytes a row, so that one group's rows
    (one person's image rows, one source's results) are read back when needed instead of holding
    whole tables as dicts (a million people's image rows are gigabytes that way).

    Groups are told apart by Python's string hash (built and used in one process); a row read back
    is checked to be of a wanted group, so a collision costs a read, never a wrong row."""

    def __init__(self) -> None:
        self._files: list[_IndexedFile] = []

    def add(self, path: str | os.PathLike[str], group: Callable[[dict[str, Any]], str],
            keep: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """Index a file's rows (those `keep` accepts; it may also tidy the row, as it is applied
        again on reading); later files' rows come after earlier files' in `rows`. Returns how many."""
        hashes, offsets = array("q"), array("q")
        for at, row in read_jsonl_at(path):
            if keep is None or keep(row):
                hashes.append(hash(group(row)))
                offsets.append(at)
        h, o = np.frombuffer(hashes, np.int64), np.frombuffer(offsets, np.int64)
        order = np.argsort(h, kind="stable")  # a group's rows stay in file order
        self._files.append(_IndexedFile(Path(path), group, keep, h[order], o[order]))
        return len(h)

    def __len__(self) -> int:
        return sum(len(f.hashes) for f in self._files)

    def has(self, groups: Sequence[str]) -> np.ndarray:
        """Whether each group has rows, by hash alone (no read): a collision would say yes for a
        group without rows, a chance of ~1e-7 among two million groups."""
        h = np.fromiter((hash(g) for g in groups), np.int64, len(groups))
        out = np.zeros(len(groups), bool)
        for f in self._files:
            out |= np.isin(h, f.hashes)
        return out

    def rows(self, groups: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The rows of `groups`, file after file, each file's in its order."""
        wanted = set(groups)
        keys = np.unique(np.fromiter((hash(g) for g in wanted), np.int64, len(wanted)))
        for path, group, keep, h, o in self._files:
            lo, hi = np.searchsorted(h, keys, "left"), np.searchsorted(h, keys, "right")
            n = hi - lo
            if not n.any():
                continue
            starts = np.repeat(lo - (np.cumsum(n) - n), n)
            offsets = np.sort(o[starts + np.arange(int(n.sum()))])
            with path.open("rb") as fh:
                for at in offsets.tolist():
                    fh.seek(at)
                    row = json.loads(fh.readline())
                    if (keep is None or keep(row)) and group(row) in wanted:
                        yield row


def jsonl_line(row: dict[str, Any]) -> str:
    """One row as our tables write it: UTF-8 text, sorted keys, a newline."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; returns how many."""
    n = 0
    with atomic_open(path, "w") as fh:
        for row in rows:
            fh.write(jsonl_line(row))
            n += 1
    return n


VERSION_KEY = "_journal_version"


class Journal:
    """Append-only rows, flushed one by one; `latest()` gives the last row per key.

    With a `version` (a stage's parameters and code, `receipts.stage_key`), every row is stamped
    with it and `latest()` ignores rows of any other version: a resumed run never mixes results made
    under other parameters or by other code with its own."""

    def __init__(self, path: str | os.PathLike[str], key: Callable[[dict[str, Any]], str],
                 version: str | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.version = version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = None

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, row) of this version's rows in the order written, streamed (a later row of a key
        overrides an earlier one): for journals too big to hold as `latest()` does."""
        for row in read_jsonl(self.path):
            if self.current(row):
                yield self.key(row), row

    def current(self, row: dict[str, Any]) -> bool:
        """Whether a row read from this journal was written under this version (its stamp is removed)."""
        return self.version is None or row.pop(VERSION_KEY, None) == self.version

    def latest(self) -> dict[str, dict[str, Any]]:
        return dict(self.rows())

    def append(self, row: dict[str, Any]) -> None:
        if self._fh is None:
            self._repair_tail()
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        stamped = row if self.version is None else {**row, VERSION_KEY: self.version}
        self._fh.write(jsonl_line(stamped))
        self._fh.flush()

    def _repair_tail(self) -> None:
        """Cut a torn last line left by a killed writer, so appends start on a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:  # read backwards from the end: journals grow to gigabytes
            end = fh.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:
                step = min(pos, 1 << 16)
                fh.seek(pos - step)
                chunk = fh.read(step)
                if pos == end and chunk.endswith(b"\n"):
                    return
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    fh.truncate(pos - step + cut + 1)
                    return
                pos -= step
            fh.truncate(0)  # no complete line at all

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
