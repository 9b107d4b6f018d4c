"""An exact count of distinct int64 keys in bounded memory.

dedup counts the distinct pairs that re-framed copies propose; they come in batches, the same
pair from several copies, and grow with the square of a cluster's size (the faces rehearsal's
hashes copied ten times: 34.7M candidate pairs). Holding one key a pair made that count grow with
the pairs. Here at most `limit` distinct keys are held; past it, every key goes to one of `parts`
files by value and each file is counted on its own at the end, so memory stays near `limit` keys
and disk takes 8 bytes a key.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

HELD_KEYS = 2_000_000  # 16 MB of keys held before they go to disk


class DistinctCount:
    """Feed batches of non-negative int64 keys with `add`; `count()` is how many distinct keys there
    were. `work` is the folder for the parts (a temporary folder when None); it is emptied first
    (a killed run's parts are not this run's) and removed by `count()`."""

    def __init__(self, work: Path | None = None, limit: int | None = None, parts: int = 64) -> None:
        self.work, self.parts = work, parts
        self.limit = max(1, HELD_KEYS if limit is None else limit)
        self._held = np.zeros(0, np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_keys = 0
        self._folder: Path | None = None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def add(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, np.int64).ravel()
        if not len(keys):
            return
        self._pending.append(keys)
        self._pending_keys += len(keys)
        if self._pending_keys >= max(len(self._held), min(self.limit, 1 << 18)):  # amortised O(n log n)
            self._merge()

    def count(self) -> int:
        self._merge()
        if self._folder is None:
            return len(self._held)
        self._spill()
        try:
            return sum(len(np.unique(np.fromfile(p, np.int64))) for p in sorted(self._folder.glob("part-*.bin")))
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def spilled(self) -> bool:
        """Whether keys went to disk (the count is exact either way)."""
        return self._folder is not None

    def _merge(self) -> None:
        if self._pending:
            self._held = np.unique(np.concatenate([self._held, *self._pending]))
            self._pending, self._pending_keys = [], 0
        if len(self._held) > self.limit:
            self._spill()

    def _spill(self) -> None:
        """The held keys to their parts on disk (a key is always in the same part, so each part is
        counted alone); the same key may be spilled twice, the count at the end drops it."""
        if self._folder is None:
            if self.work is not None:
                self.work.mkdir(parents=True, exist_ok=True)
                self._folder = self.work
            else:
                self._folder = Path(tempfile.mkdtemp(prefix="wikifaces-distinct-"))
        keys = self._held
        part = keys % self.parts
        order = np.argsort(part, kind="stable")
        keys, part = keys[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.parts + 1))
        for p in range(self.parts):
            if bounds[p] < bounds[p + 1]:
                with open(self._folder / f"part-{p:03d}.bin", "ab") as fh:
                    keys[bounds[p]:bounds[p + 1]].tofile(fh)
        self._held = np.zeros(0, np.int64)
