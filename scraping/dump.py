"""Source `wikidata-dump`: Wikidata's humans from its JSON dump, streamed, never held.

The dump (`latest-all.json.gz`, ~141 GB, or `.bz2`) is a JSON array with one entity a line. Most
lines are not humans, so a line is parsed only when a cheap byte test finds an item value Q5 in it (an
item value Q5, as P31 = human writes it): the test runs over whole decompressed chunks with
`bytes.find`, never line by line. Decompression is the cost: gzip with python-isal (ISA-L, about
2.5x zlib here) in a thread of its own, so it overlaps the scan; bz2 with indexed_bzip2 (parallel).

Resume: a gzip or bz2 stream can only be restarted from its beginning, so the journal records
how many lines are done (with the rows found in them); a resumed run decompresses and skips that
many lines without scanning them, then goes on. A killed run neither loses nor repeats a row.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from wikifaces.core.errors import MissingInput, UserError
from wikifaces.core.identity import results_hash, stage_key
from wikifaces.core.tables import Journal

from .config import NamesConfig
from .wikidata import EntityReader, PeopleSink

log = logging.getLogger("wikifaces.scraping")

# An item value Q5 as the dump writes it (`"datavalue":{"value":{...,"id":"Q5"},"type":"wikibase-entityid"}`),
# with or without the older "numeric-id" key; the longer the needle, the faster `find` skips.
NEEDLE = b'"id":"Q5"},"type":"wikibase-entityid"'
JOURNAL_FILE = "names-dump.journal.jsonl"
# rows found since the last checkpoint that force the next one: the stage holds at most these
CHECKPOINT_ROWS = 5000


class DumpError(UserError):
    pass


@dataclass
class DumpResult:
    lines: int
    entities_parsed: int
    resumed_from_line: int
    decompressor: str


class _Counting(io.RawIOBase):
    """The compressed file, knowing how far into it the reading got (the progress bar's measure)."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 (closed in close())
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # indexed_bzip2 seeks (to find its blocks)
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, b: Any) -> int:
        n = self._fh.readinto(b) or 0
        self.read_bytes = max(self.read_bytes, self._fh.tell())  # the furthest point reached (bz2 seeks back)
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class _Prefetch:
    """Reads a stream ahead in a thread of its own (the decompressor releases the GIL), handing
    over whole blocks without a copy, so decompression overlaps the scan on a second core."""

    def __init__(self, stream: Any, block: int, depth: int = 4) -> None:
        self._stream = stream
        self._block = block
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dump-decompress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data: bytes | BaseException = self._stream.read(self._block)
            except BaseException as exc:  # handed to the reader, raised there
                data = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(data, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(data, bytes) or not data:
                return

    def read(self, _n: int = -1) -> bytes:
        if self._done:
            return b""
        data = self._queue.get()
        if isinstance(data, BaseException):
            self._done = True
            raise data
        self._done = not data
        return data

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._stream.close()

    def __enter__(self) -> _Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dump(path: Path, block_bytes: int = 1 << 20) -> tuple[_Prefetch, _Counting, str]:
    """(decompressed stream read ahead, the counted compressed file, the decompressor's name) by suffix."""
    raw = _Counting(path)
    buffered = io.BufferedReader(raw, 1 << 20)
    name = path.name.lower()
    stream: Any
    if name.endswith(".gz"):
        try:
            from isal import igzip

            stream, decompressor = igzip.open(buffered, "rb"), "isal"
        except ImportError:  # pragma: no cover - isal is a dependency; keep working without it
            import gzip

            stream, decompressor = gzip.open(buffered, "rb"), "zlib"  # noqa: SIM115 (closed by the reader)
    elif name.endswith(".bz2"):
        try:
            import indexed_bzip2

            stream = indexed_bzip2.open(buffered, parallelization=os.cpu_count() or 1)
            decompressor = "indexed_bzip2"
        except ImportError:  # pragma: no cover
            import bz2

            stream, decompressor = bz2.open(buffered, "rb"), "bz2"  # noqa: SIM115 (closed by the reader)
    elif name.endswith(".json"):
        stream, decompressor = buffered, "none"
    else:
        raw.close()
        raise DumpError(f"{path} is not a Wikidata JSON dump by its name: expected .json.gz, .json.bz2 or .json")
    return _Prefetch(stream, block_bytes), raw, decompressor


def _lines(data: bytes, start: int, end: int) -> int:
    """Newlines in data[start:end]: numpy (which lets go of the GIL, so the decompressing thread
    runs meanwhile, and counts 1.7x faster than bytes.count here) for long spans."""
    if end - start < 4096:
        return data.count(b"\n", start, end)
    return int(np.count_nonzero(np.frombuffer(data, np.uint8, end - start, start) == 10))


def scan_lines(stream: Any, skip: int, chunk_bytes: int) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """(lines complete so far, [(line number, line) with the needle]) per chunk, after skipping
    `skip` lines unscanned. Line numbers are 1-based ("[" is line 1). Chunks are searched in place
    (`find`/`count` with bounds): only the line that straddles two chunks is copied."""
    done = 0  # complete lines so far
    carry = b""  # the unfinished line at the end of the last chunk
    while True:
        data = stream.read(chunk_bytes)
        if not data:
            if carry.strip():  # a last line without a newline
                done += 1
                yield done, ([(done, carry)] if done > skip and NEEDLE in carry else [])
            return
        first = data.find(b"\n")
        if first == -1:  # no line ends in this chunk
            carry += data
            continue
        hits: list[tuple[int, bytes]] = []
        head = carry + data[: first + 1]  # the straddling line, whole
        done += 1
        if done > skip and NEEDLE in head:
            hits.append((done, head[:-1]))
        cut = data.rfind(b"\n") + 1
        start = first + 1
        if done < skip:  # resuming: count lines, scan nothing
            n = _lines(data, start, cut)
            if done + n <= skip:
                done += n
                carry = data[cut:]
                yield done, []
                continue
            while done < skip:
                start = data.index(b"\n", start) + 1
                done += 1
        pos = counted = start
        while (i := data.find(NEEDLE, pos, cut)) != -1:
            s = data.rfind(b"\n", 0, i) + 1
            e = data.index(b"\n", i)
            done += _lines(data, counted, s)
            counted = s
            hits.append((done + 1, data[s:e]))
            pos = e + 1
        done += _lines(data, counted, cut)
        carry = data[cut:]
        yield done, hits


def _strip(line: bytes) -> bytes:
    line = line.rstrip()
    return line[:-1] if line.endswith(b",") else line


def read_dump(config: NamesConfig, out_dir: Path, sink: PeopleSink, progress: bool = True) -> DumpResult:
    """Every human in the dump that passes the filters, in dump order, handed to `sink` as each
    checkpoint is journalled (a resumed run hands the journalled ones first); resumable."""
    path = Path(config.dump_file or "")
    if not path.is_file():
        raise MissingInput(f"the Wikidata dump {path} does not exist (download latest-all.json.gz from "
                           "https://dumps.wikimedia.org/wikidatawiki/entities/)")
    source = f"wikidata-dump:{path.name}"
    version = stage_key(results_hash(config.model_copy(update={"limit": None, "resolve_pages": False}), out_dir))
    journal = Journal(out_dir / JOURNAL_FILE, key=lambda r: str(r["upto"]), version=version)
    start = people = 0
    for _, rec in journal.rows():  # streamed: a resumed run's journal holds every row found so far
        if rec["upto"] <= start:  # checkpoints are written in line order; anything else is not ours
            continue
        start = rec["upto"]
        people += _hand(sink, rec["rows"], rec["rejected"])
    parsed = 0
    reader = EntityReader(config, source)
    stream, raw, decompressor = open_dump(path, config.dump_chunk_bytes)
    size = path.stat().st_size
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[people]:,} people"))
    last = time.monotonic()
    pending: list[dict[str, Any]] = []
    pending_rejected: list[dict[str, Any]] = []
    lines = journalled = start
    # The decompressing thread needs the GIL for a moment after each block; by default it waits up
    # to 5 ms for the scanning thread to let go, which serialised the two (measured: 0.49 s against
    # 0.42 s at 0.1 ms for decompression beside the needle search on 520 MB).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, 0.0001))
    try:
        with stream, Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"reading {path.name}", total=size, people=people)
            for lines, hits in [] if sink.full else scan_lines(stream, start, config.dump_chunk_bytes):
                for number, line in hits:
                    parsed += 1
                    try:
                        entity = reader.decode(_strip(line))
                    except ValueError as exc:  # msgspec's DecodeError and ValidationError
                        pending_rejected.append(_malformed(number, line, str(exc)))
                        continue
                    row = reader.person(entity)
                    if row is not None:
                        row["dump_line"] = number
                        pending.append(row)
                now = time.monotonic()
                limit_near = config.limit is not None and people + len(pending) >= config.limit
                if now - last >= config.dump_checkpoint_seconds or len(pending) >= CHECKPOINT_ROWS or limit_near:
                    journal.append({"upto": lines, "rows": pending, "rejected": pending_rejected})
                    people += _hand(sink, pending, pending_rejected)
                    pending, pending_rejected, last, journalled = [], [], now, lines
                    bar.update(task, completed=raw.read_bytes, people=people)
                    if sink.full:
                        break
            if lines != journalled or pending or pending_rejected:
                journal.append({"upto": lines, "rows": pending, "rejected": pending_rejected})
                _hand(sink, pending, pending_rejected)
    except (OSError, EOFError) as exc:
        raise DumpError(f"{path} could not be read to the end after line {lines:,}: {exc}. The lines before are "
                        "journalled; a damaged download must be fetched again.") from exc
    finally:
        sys.setswitchinterval(interval)
        journal.close()
        raw.close()
    return DumpResult(lines, parsed, start, decompressor)


def _hand(sink: PeopleSink, rows: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> int:
    """Rows found (and lines rejected) to the sink; how many rows."""
    for row in rows:
        sink.person(row)
    for row in rejected:
        sink.rejected(row)
    return len(rows)


def _malformed(number: int, line: bytes, error: str) -> dict[str, Any]:
    head = line[:80].decode("utf-8", "replace")
    return {"input": f"dump line {number}", "line": number, "sources": ["wikidata-dump"], "status": "malformed",
            "reason": f"line {number} of the dump is not an entity ({error[:120]}): {head!r}...",
            "title": None, "pageid": None}


def forget_dump(out_dir: Path) -> None:
    (out_dir / JOURNAL_FILE).unlink(missing_ok=True)
