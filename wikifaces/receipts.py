"""Stage receipts: what a stage ran with and produced, so an unchanged rerun can be skipped.

A receipt holds the stage's config hash, fingerprints of its inputs, the code version and
its counts. `wikifaces.pipeline.stage_status` compares a stored receipt with a new run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from wikifaces import code_version
from wikifaces.files import atomic_write_text, sha256_file


def config_hash(config: BaseModel | dict[str, Any]) -> str:
    """A stable hash of a config: its JSON with sorted keys."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A file's sha256, or for a folder (a shard dataset) the sha256 of its manifest; "" if absent.

    A dataset whose shard files are missing or have other sizes than its manifest says counts as
    absent: a cheap stat per shard (a full check is `wikifaces verify`)."""
    p = Path(path)
    if p.is_dir():
        m = p / "manifest.json"
        if not m.exists():
            return ""
        from shards import ShardError, read_manifest

        try:
            intact = all((p / s.file).stat().st_size == s.bytes for s in read_manifest(p).shards)
        except (OSError, ShardError):
            intact = False
        return sha256_file(m) if intact else ""
    return sha256_file(p) if p.exists() else ""


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
