"""A stage's identity: which config fields decide its results, and the hash of those.

Execution-only fields (workers, politeness, caching) are marked on the field itself
(`execution_only`); `results_hash` leaves them out, writes paths under the data root relative to
it and loopback URLs without their port. Receipts and per-item journals are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .version import code_fingerprint

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
    return f"{results}@{code_fingerprint()}"
