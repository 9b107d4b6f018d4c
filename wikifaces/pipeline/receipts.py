"""Stage receipts: what a stage ran with and produced, so an unchanged rerun can be skipped.

A receipt holds the stage's results hash (`wikifaces.core.identity`), fingerprints of its inputs
and outputs, the code version and its counts; the runner writes exactly one per stage run.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from shards import dataset_fingerprint
from wikifaces.core.files import atomic_write_text, sha256_file
from wikifaces.core.version import code_version

HUGE = 1 << 30


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A file's sha256, or for a folder (a shard dataset) `shards.dataset_fingerprint`; "" if absent.
    A file over 1 GiB (a Wikidata dump: 141 GB, minutes to hash) is known by its size, modification
    time and the sha256 of its first and last MiB: a new dump differs in all of them."""
    p = Path(path)
    if p.is_dir():
        return dataset_fingerprint(p)
    if not p.exists():
        return ""
    st = p.stat()
    if st.st_size <= HUGE:
        return sha256_file(p)
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(p, "rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(-(1 << 20), os.SEEK_END)
        h.update(fh.read(1 << 20))
    return "quick:" + h.hexdigest()


class Receipt(BaseModel):
    stage: str
    config_hash: str
    config: dict[str, Any]
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    code_version: str = Field(default_factory=code_version)
    counts: dict[str, Any] = Field(default_factory=dict)
    finished: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def write(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Receipt | None:
        p = Path(path)
        if not p.exists():
            return None
        try:
            return cls.model_validate_json(p.read_text())
        except ValueError:
            return None  # a damaged receipt only means the stage reruns
