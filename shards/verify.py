"""Checking a dataset against its manifest: presence, size, sha256, counts, and decodes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from .files import sha256_file
from .format import COUNT_KEY, MANIFEST_NAME, ShardError, decode_image, meta_key
from .reader import close_shard_env, image_value, open_shard_env, read_manifest


@dataclass
class ShardCheck:
    file: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)


@dataclass
class VerifyReport:
    path: Path
    name: str
    count: int
    shards: list[ShardCheck]
    decoded: int = 0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.shards)

    @property
    def damaged(self) -> list[str]:
        return [s.file for s in self.shards if not s.ok]


def verify_dataset(path: str | os.PathLike[str], decode: bool = False) -> VerifyReport:
    """Check every shard's size and sha256 against the manifest; with `decode`, also read and
    decode every record and check its size and metadata. Damage is reported per shard."""
    root = Path(path)
    manifest = read_manifest(root)
    spec = manifest.image
    report = VerifyReport(root, manifest.name, manifest.count, [])
    for info in manifest.shards:
        check = ShardCheck(info.file)
        report.shards.append(check)
        shard_path = root / info.file
        if not shard_path.is_file():
            check.fail("file is missing")
            continue
        size = shard_path.stat().st_size
        if size != info.bytes:
            check.fail(f"size is {size} bytes, the manifest says {info.bytes}")
        digest = sha256_file(shard_path)
        if digest != info.sha256:
            check.fail(f"sha256 is {digest[:12]}…, the manifest says {info.sha256[:12]}…")
        close_shard_env(shard_path)  # never trust a mapping made before the check
        try:
            env = open_shard_env(shard_path)
            with env.begin(buffers=True) as txn:
                raw = txn.get(COUNT_KEY)
                raw = None if raw is None else bytes(raw)
                if raw is None or int(raw) != info.count:
                    check.fail(f"count entry is {raw!r}, the manifest says {info.count}")
                if decode:
                    for local in range(info.count):
                        problem = _check_record(txn, local, spec.height, spec.width, spec.block)
                        if problem:
                            check.fail(f"record {local}: {problem}")
                            if len(check.problems) > 20:
                                check.problems.append("… (more problems not listed)")
                                break
                        else:
                            report.decoded += 1
        except (lmdb.Error, ShardError, ValueError) as exc:
            check.fail(f"cannot be read as LMDB: {exc}")
        finally:
            close_shard_env(shard_path)
    return report


def _check_record(txn: lmdb.Transaction, local: int, height: int | None, width: int | None,
                  block: int) -> str | None:
    try:
        data = image_value(txn, local, block)
    except ShardError as exc:
        return str(exc)
    meta = txn.get(meta_key(local))
    if data is None or meta is None:
        return "image or metadata entry is missing"
    try:
        parsed = json.loads(bytes(meta))
    except ValueError:
        return "metadata is not valid JSON"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("key"), str):
        return "metadata has no string 'key'"
    try:
        image = decode_image(data)
    except ShardError:
        return "image does not decode"
    if height is not None and image.shape[:2] != (height, width):
        return f"image is {image.shape[0]}x{image.shape[1]}, the manifest says {height}x{width}"
    return None


def dataset_fingerprint(path: str | os.PathLike[str]) -> str:
    """The sha256 of a dataset's manifest, or "" when it is absent or a shard file is missing or
    has another size than the manifest says: a cheap stat per shard (a full check is `verify_dataset`)."""
    p = Path(path)
    manifest = p / MANIFEST_NAME
    if not manifest.exists():
        return ""
    try:
        intact = all((p / s.file).stat().st_size == s.bytes for s in read_manifest(p).shards)
    except (OSError, ShardError):
        intact = False
    return sha256_file(manifest) if intact else ""
