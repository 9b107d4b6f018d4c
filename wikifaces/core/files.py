"""Crash-safe file writing and hashing.

Every output in wikifaces is written to a temporary name beside its final path and
renamed into place, so a killed process never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so that a rename survives a power cut, where the OS allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def locked_temporary(final: Path) -> tuple[int, str]:
    """A new temporary file beside `final`, open and locked: held until it is renamed, so that
    `sweep_temporaries` removes only temporaries no live writer holds. One swept in the instant
    between its creation and its lock is replaced by another."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success fsync and rename it onto `path`.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', not {mode!r}")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = locked_temporary(final)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic writes leave when killed mid-write


def sweep_temporaries(root: str | os.PathLike[str]) -> list[tuple[Path, int]]:
    """Delete the temporary files that killed atomic writes left under `root`; returns them with
    their sizes.

    Safe beside live writers: a writer holds a lock on its temporary until it is renamed into
    place and the kernel drops the lock when its process dies, so only a temporary whose lock can
    be taken is abandoned (a killed images stage left one as large as its table each time)."""
    removed = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if _TEMPORARY.match(name) and (size := _abandoned(path := Path(dirpath) / name)) is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append((path, size))
    return removed


def _abandoned(path: Path) -> int | None:
    """The size of a temporary no live writer holds, else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone meanwhile (renamed into place), or not ours to read
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.fstat(fd).st_size
    except BlockingIOError:  # a live writer holds it
        return None
    finally:
        os.close(fd)


def swap_dir(new: Path, final: Path) -> None:
    """Replace the folder `final` with `new`; a crash in between leaves `final.old`, which
    `recover_swap` restores on the next run."""
    import shutil

    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(final: Path) -> None:
    """Undo a swap that a crash cut between its two renames."""
    old = final.with_name(final.name + ".old")
    if old.exists() and not final.exists():
        old.rename(final)
