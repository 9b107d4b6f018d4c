"""One build at a time per data root.

Two builds writing the same receipts, journals and shards would interleave their work, so a
build takes an exclusive `flock` on `<root>/.lock` and a second one refuses at once, naming the
holder. The kernel releases the lock when its process dies, even by SIGKILL, so a killed build
never leaves a stale lock behind. Nested use within one process (a build running its stage
flows) is allowed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".lock"
_held: dict[str, int] = {}
_guard = threading.Lock()


class RootLocked(UserError, RuntimeError):
    """Another process is building on this data root."""


@contextlib.contextmanager
def root_lock(root: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold the data root's lock for `what` (a build or a stage), or raise RootLocked."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(base)
    with _guard:
        if _held.get(key):
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    path = base / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(path)
        os.close(fd)
        raise RootLocked(f"the data root {base} is in use by another build ({holder}); wait for it to finish, "
                         "or use another --root") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        with _guard:
            _held[key] = 1
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"{info.get('what', 'a build')}, pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
