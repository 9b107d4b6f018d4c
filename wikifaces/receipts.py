"""Stage receipts: what a stage ran with and produced, so an unchanged rerun can be skipped.

A receipt holds the stage's config hash, fingerprints of its inputs, the code version and
its counts. `wikifaces.pipeline.stage_status` compares a stored receipt with a new run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from wikifaces import code_version
from wikifaces.files import atomic_write_text, sha256_file

_EXECUTION_ONLY = "execution_only"


def execution_only(default: Any = None, **kwargs: Any) -> Any:
    """A config field that says how to run (workers, politeness, caching), not what comes out:
    it is left out of `results_hash`, so changing it never reruns a stage or voids its journal."""
    return Field(default, json_schema_extra={_EXECUTION_ONLY: True}, **kwargs)


def config_hash(config: BaseModel | dict[str, Any]) -> str:
    """A stable hash of a config: its JSON with sorted keys."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def results_hash(config: BaseModel, root: str | os.PathLike[str] | None = None) -> str:
    """The hash of what decides a stage's results: the config without its execution-only fields,
    paths under the data root written relative to it (`data` and `/abs/data` are one root), and
    loopback URLs without their port (the offline stand-in takes whichever port is free)."""
    return config_hash(results_view(config, root))


def results_view(config: BaseModel, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in type(config).model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(_EXECUTION_ONLY):
            continue
        out[name] = _portable(getattr(config, name), root)
    return out


def _portable(value: Any, root: str | os.PathLike[str] | None) -> Any:
    if isinstance(value, BaseModel):
        return results_view(value, root)
    if isinstance(value, os.PathLike):
        return portable_path(value, root)
    if isinstance(value, str):
        return re.sub(r"(127\.0\.0\.1|localhost|\[::1\]):\d+", r"\1", value)
    if isinstance(value, list | tuple):
        return [_portable(v, root) for v in value]
    if isinstance(value, dict):
        return {str(k): _portable(v, root) for k, v in value.items()}
    return value


def portable_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None) -> str:
    """A path as `$root/...` when it lies under the data root, else absolute."""
    p = Path(path).resolve()
    if root is not None:
        base = Path(root).resolve()
        if p == base or base in p.parents:
            return "$root/" + p.relative_to(base).as_posix()
    return str(p)


def stage_key(results: str) -> str:
    """What a per-item journal row is valid for: a results hash and the code that made it. A
    changed parameter or new code never mixes old and new items; a crash under the same ones resumes."""
    return f"{results}@{code_version()}"


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
