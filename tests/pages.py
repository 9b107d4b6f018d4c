"""What a test needs to see memory that a mapping holds: resident pages of a mapped file, and
dropping a file from the page cache."""

from __future__ import annotations

import os
from pathlib import Path


def mapped_kb(path) -> int:
    """Resident kB of this process's mappings of a file (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split()[0]:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def evict(path) -> None:
    """Drop a file from the page cache, as data read once is: cached large folios (a file just
    written) are mapped whole on a fault, which would hide what a pass itself maps."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
