"""A table of fixed-width rows in a memory-mapped .npy file that does not grow a process's RSS.

Pages a process touches through a mapping count in its resident memory until they are unmapped
(the kernel drops them only under pressure), so a stage that fills or reads a mapped table of
every item (identity's descriptors: 0.5 kB a face, a GB for two million) would show its whole
size as RSS. `MappedRows` lets the touched pages go every `window` rows: on a shared file
mapping that is safe for rows written too (the page cache and the file keep them, and the next
touch maps them again).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np


class MappedRows:
    """An (n, width) array in a .npy file, read and written by row through `[]` as an ndarray is;
    every `window` rows touched, the mapping's pages leave this process's resident memory.
    `array` is the mapped ndarray itself (reads through it are not counted)."""

    def __init__(self, path: str | os.PathLike[str], rows: int, width: int, dtype: Any = np.float32,
                 window: int = 4096) -> None:
        dtype = np.dtype(dtype)
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": (rows, width)})
            offset = fh.tell()
            fh.truncate(offset + rows * width * dtype.itemsize)
        with open(path, "r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), 0)  # shared: what is written reaches the file
        self.array = np.frombuffer(self._map, dtype, rows * width, offset).reshape(rows, width)
        self.window, self._touched = window, 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> np.ndarray:
        self._touch(index)
        return self.array[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._touch(index)
        self.array[index] = value

    def _touch(self, index: Any) -> None:
        if isinstance(index, slice):
            self._touched += len(range(*index.indices(len(self.array))))
        else:
            self._touched += int(np.size(index)) if not isinstance(index, int | np.integer) else 1
        if self._touched >= self.window:
            self.release()

    def release(self) -> None:
        """Unmap the pages touched so far from this process (rows read stay valid: a later touch
        maps them again from the page cache or the file)."""
        self._touched = 0
        self._map.madvise(mmap.MADV_DONTNEED)
