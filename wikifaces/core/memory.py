"""Giving freed memory back to the system after a phase that made large temporaries.

glibc's malloc keeps what a process frees on its heap for reuse, and raises its mmap threshold
(up to 32 MB) each time a large block is freed, so arrays of a few MB made and dropped by one
phase of a stage (a search's buffers, a sort's copies) stay in its RSS for the rest of the run.
`trim_heap` asks malloc to return the free pages; a stage calls it between phases, where what it
holds from then on is much less than what the phase before made. A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim_heap() -> bool:
    """Return the heap's free pages to the system (glibc's `malloc_trim(0)`, ~1-50 ms); True
    when some were. False where the C library has no such call."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
