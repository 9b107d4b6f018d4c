"""Stage `lsun-import`: an LSUN category (LMDB release or image folder) into shards.

Records are read as a stream in a fixed order, decoded and normalised (shorter side to
`size`, centre crop) in worker processes in order-preserving batches, and written through
`shards/`. Each record keeps its position in the source, so a killed import resumes after the
last complete shard. Images that do not decode become rows with a reason, never a crash.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing as mp
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from rich.progress import Progress

from shards import ShardWriter, is_complete, open_dataset
from shards.format import encode_image, sniff_encoding
from wikifaces.core.errors import MissingInput
from wikifaces.core.executor import Executor, fan_out
from wikifaces.core.files import atomic_write_text
from wikifaces.core.identity import config_hash, results_hash, stage_key
from wikifaces.core.imaging import ALPHA_NOTE, ImageProblem, centre_square, decode_rgb, has_alpha
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import Journal, read_jsonl, write_jsonl
from wikifaces.core.version import code_version

from .config import LsunImportConfig
from .lsun import is_lsun_lmdb, iter_lsun_lmdb, iter_source, lsun_count

BATCH = 64
KEY_FILE = "import.key"


@dataclass
class ImportSummary:
    imported: int
    rejected: int
    output: Path
    counts: dict[str, Any] = field(default_factory=dict)


def normalise(data: bytes, size: int | None, encoding: str, quality: int, max_pixels: int
              ) -> tuple[bytes | None, dict[str, Any], str]:
    """(encoded bytes or None, metadata, error) for one source image."""
    fmt = sniff_encoding(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            alpha = has_alpha(im)
    except Exception:
        return None, {}, f"not an image ({fmt or 'unknown format'})"
    if w * h > max_pixels:
        return None, {}, f"{w}x{h} exceeds the cap of {max_pixels:,} pixels"
    meta = {"source_format": fmt, "source_width": w, "source_height": h}
    if alpha:  # never stored or hashed with the alpha channel dropped
        meta["alpha"] = ALPHA_NOTE
        try:
            img = decode_rgb(data, max_pixels)
        except ImageProblem as exc:
            return None, meta, exc.reason
        return encode_image(_fit(img, size), encoding, quality), meta, ""  # type: ignore[arg-type]
    if size is None and fmt == encoding:
        return data, meta, ""
    flags = cv2.IMREAD_COLOR_RGB
    if size is not None and fmt == "jpeg":  # decode at 1/2, 1/4 or 1/8 scale in the DCT domain
        for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if min(w, h) >= 2 * factor * size:
                flags = flag
                break
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        return None, meta, "the image does not decode"
    if flags != cv2.IMREAD_COLOR_RGB:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return encode_image(_fit(img, size), encoding, quality), meta, ""  # type: ignore[arg-type]


def _fit(img: np.ndarray, size: int | None) -> np.ndarray:
    """Centre square at `size` (`centre_square`); unchanged when `size` is None."""
    return img if size is None else centre_square(img, size)


def _work(batch: list[tuple[int, str, bytes]], size: int | None, encoding: str, quality: int,
          max_pixels: int) -> list[tuple[int, str, bytes | None, dict[str, Any], str]]:
    cv2.setNumThreads(1)
    return [(pos, key, *normalise(data, size, encoding, quality, max_pixels)) for pos, key, data in batch]


def _ordered(pool: ProcessPoolExecutor | None, batches: Iterator[list], args: tuple, window: int) -> Iterator[list]:
    """Results of `_work` over batches, in order, with at most `window` batches in flight."""
    if pool is None:
        for b in batches:
            yield _work(b, *args)
        return
    pending: deque[Future] = deque()
    for b in batches:
        pending.append(pool.submit(_work, b, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _key(config: LsunImportConfig, root: DataRoot) -> str:
    """What an interrupted import may be resumed under: the same parameters and the same code."""
    return stage_key(results_hash(config, root.root))


def reset_import(config: LsunImportConfig, root: str | os.PathLike[str] | DataRoot | None = None) -> None:
    """Forget an earlier or interrupted import of this category: the next one starts from scratch."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    base = data.lsun(config.category)
    (base / KEY_FILE).unlink(missing_ok=True)
    shutil.rmtree(_parts_dir(config, data), ignore_errors=True)


def import_lsun(config: LsunImportConfig, root: str | os.PathLike[str] | DataRoot | None = None,
                progress: bool = True, force: bool = False, executor: Executor | None = None) -> ImportSummary:
    """The stage: import (or resume importing) a category; `force` imports it again from the first
    record. Without an executor, one ordered stream into the shards (worker processes normalise,
    resumable after the last complete shard); with one, independent parts of `config.part_size`
    records through it (threads, processes or a Dask cluster), merged at the end."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    if not Path(config.source).exists():
        raise MissingInput(f"LSUN source {config.source} does not exist")
    out = data.lsun(config.category) / "shards"
    if force:
        reset_import(config, data)
    elif is_complete(out):
        ds = open_dataset(out)
        if ds.manifest.provenance.parameters.get("config_hash") == config_hash(config):
            return ImportSummary(len(ds), 0, out, {"imported": len(ds), "skipped": "already complete"})
    if executor is None:
        return _import_stream(config, data, progress)
    parts = plan_import(config, config.part_size)
    fan_out(executor, import_part, parts, config, str(data.root), on_result=lambda n: None,
            label=f"importing LSUN {config.category}", progress=progress)
    return merge_parts(config, data, parts)


def _import_stream(config: LsunImportConfig, data: DataRoot, progress: bool) -> ImportSummary:
    """The import as one ordered stream, resumed after the last complete shard of a killed run."""
    base = data.lsun(config.category)
    out = base / "shards"
    key = _key(config, data)
    base.mkdir(parents=True, exist_ok=True)
    same_run = (base / KEY_FILE).exists() and (base / KEY_FILE).read_text() == key
    interrupted = out.exists() and any(out.iterdir()) and not is_complete(out)
    mode = "resume" if interrupted and same_run else "overwrite"
    atomic_write_text(base / KEY_FILE, key)
    params = {**config.model_dump(mode="json"), "config_hash": config_hash(config)}
    size = (config.size, config.size) if config.size else None
    journal = Journal(base / "import-rejected.journal.jsonl", key=lambda r: str(r["position"]), version=key)
    # Keys are the source's own (LMDB keys, paths in a folder): unique by construction, so the
    # writer need not hold every key to check them (3M keys would hold ~450 MB).
    with ShardWriter(out, name=f"lsun-{config.category}", image_size=size, encoding=config.encoding,
                     quality=config.quality, parameters=params, mode=mode, check_keys=False,
                     max_records=config.shard_records, code_version=code_version()) as writer:
        skip = 0
        if writer.resumed_count:  # continue after the last record of the complete shards
            last = open_shard_last_position(out, writer)
            skip = last + 1
        total = lsun_count(config.source) if is_lsun_lmdb(config.source) else None
        if config.limit is not None:
            total = min(total, config.limit) if total is not None else config.limit
        source = itertools.islice(iter_source(config.source, skip),
                                  None if config.limit is None else max(0, config.limit - skip))
        positions = itertools.count(skip)
        batches = iter(lambda: [(next(positions), k, v) for k, v in itertools.islice(source, BATCH)], [])
        args = (config.size, config.encoding, config.quality, config.max_pixels)
        workers = config.workers or os.cpu_count() or 1
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None
        try:
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(f"importing LSUN {config.category}", total=total, completed=skip)
                for results in _ordered(pool, batches, args, window=workers * 4):
                    for pos, key, encoded, meta, error in results:
                        if encoded is None:
                            journal.append({"position": pos, "key": key, "status": "corrupt", "reason": error})
                        else:
                            writer.add_encoded(encoded, {"key": key, "source_index": pos, **meta})
                    bar.advance(task, len(results))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            journal.close()
    rejected = sorted(journal.latest().values(), key=lambda r: r["position"])
    write_jsonl(base / "import-rejected.jsonl", rejected)
    journal.remove()
    ds = open_dataset(out)
    counts = {"imported": len(ds), "rejected": len(rejected)}
    return ImportSummary(len(ds), len(rejected), out, counts)


def open_shard_last_position(out: Path, writer: ShardWriter) -> int:
    """The source position of the last record in the complete shards of an interrupted import."""
    from shards.format import meta_key
    from shards.reader import open_shard_env

    last = writer.shards[-1]
    with open_shard_env(out / last.file).begin() as txn:
        return int(json.loads(txn.get(meta_key(last.count - 1)))["source_index"])


# -- the same import as independent parts, for fan-out ---------------------------------------------------------
@dataclass
class ImportPart:
    index: int
    start: int  # position of the first record in the source
    count: int
    start_key: str | None  # for an LMDB source: the key at `start` (a cursor jumps there)


def plan_import(config: LsunImportConfig, part_size: int = 20_000) -> list[ImportPart]:
    """Cut the source into parts of `part_size` records. For an LMDB, one pass over the keys
    (values are not read) notes the first key of each part; the key list is not kept."""
    src = Path(config.source)
    if not src.exists():
        raise MissingInput(f"LSUN source {src} does not exist")
    parts: list[ImportPart] = []
    total = 0
    if is_lsun_lmdb(src):
        import lmdb

        env = lmdb.open(str(src), readonly=True, lock=False, readahead=False, subdir=True)
        try:
            with env.begin() as txn, txn.cursor() as cur:
                for pos, key in enumerate(cur.iternext(keys=True, values=False)):
                    if config.limit is not None and pos >= config.limit:
                        break
                    if pos % part_size == 0:
                        parts.append(ImportPart(len(parts), pos, 0, key.decode("ascii", "replace")))
                    total = pos + 1
        finally:
            env.close()
    else:
        for pos, _ in enumerate(iter_source(src)):
            if config.limit is not None and pos >= config.limit:
                break
            if pos % part_size == 0:
                parts.append(ImportPart(len(parts), pos, 0, None))
            total = pos + 1
    for p in parts:
        p.count = min(part_size, total - p.start)
    return parts


def _parts_dir(config: LsunImportConfig, root: DataRoot) -> Path:
    """One folder per parameters and code: parts made by other ones are never merged in."""
    return root.lsun(config.category) / f"parts-{hashlib.sha256(_key(config, root).encode()).hexdigest()[:12]}"


def _iter_part(config: LsunImportConfig, part: ImportPart) -> Iterator[tuple[str, bytes]]:
    if part.start_key is not None:  # an LMDB: the cursor jumps to the part's first key
        return itertools.islice(iter_lsun_lmdb(config.source, start_key=part.start_key), part.count)
    return itertools.islice(iter_source(config.source, part.start), part.count)


def import_part(part: ImportPart, config: LsunImportConfig, root: str | os.PathLike[str] | DataRoot | None) -> int:
    """Import one part into its own small dataset (skipped when already complete); returns its
    record count. A unit of fan-out: its result is files, not a payload."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    out = _parts_dir(config, data) / f"part-{part.index:05d}"
    if is_complete(out):
        return len(open_dataset(out))
    cv2.setNumThreads(1)
    size = (config.size, config.size) if config.size else None
    rejected = []
    with ShardWriter(out, name=f"lsun-{config.category}-part", image_size=size, encoding=config.encoding,
                     quality=config.quality, mode="overwrite", max_records=config.shard_records,
                     code_version=code_version()) as w:
        for pos, (key, raw) in enumerate(_iter_part(config, part), start=part.start):
            encoded, meta, error = normalise(raw, config.size, config.encoding, config.quality, config.max_pixels)
            if encoded is None:
                rejected.append({"position": pos, "key": key, "status": "corrupt", "reason": error})
            else:
                w.add_encoded(encoded, {"key": key, "source_index": pos, **meta})
    write_jsonl(out.with_suffix(".rejected.jsonl"), rejected)
    return w.count


def merge_parts(config: LsunImportConfig, root: str | os.PathLike[str] | DataRoot | None,
                parts: list[ImportPart]) -> ImportSummary:
    """Join complete parts into `<category>/shards` (their shard files renamed in order) with one
    manifest and the rejected rows in one table."""
    from shards.format import MANIFEST_NAME, Manifest, Provenance, ShardInfo, shard_name
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    base = data.lsun(config.category)
    pdir = _parts_dir(config, data)
    out = base / "shards"
    tmp = base / "shards.merging"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    infos, rejected, spec = [], [], None
    for part in parts:
        pds = pdir / f"part-{part.index:05d}"
        manifest = open_dataset(pds).manifest
        spec = manifest.image
        for s in manifest.shards:
            name = shard_name(len(infos))
            os.replace(pds / s.file, tmp / name)
            infos.append(ShardInfo(file=name, count=s.count, bytes=s.bytes, sha256=s.sha256))
        rejected.extend(read_jsonl(pds.with_suffix(".rejected.jsonl")))
    params = {**config.model_dump(mode="json"), "config_hash": config_hash(config), "parts": len(parts)}
    manifest = Manifest(name=f"lsun-{config.category}", count=sum(i.count for i in infos),
                        image=spec or open_dataset(out).manifest.image, shards=infos,
                        provenance=Provenance(code_version=code_version(), parameters=params))
    atomic_write_text(tmp / MANIFEST_NAME, manifest.to_json())
    old = base / "shards.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    write_jsonl(base / "import-rejected.jsonl", sorted(rejected, key=lambda r: r["position"]))
    shutil.rmtree(pdir, ignore_errors=True)
    counts = {"imported": manifest.count, "rejected": len(rejected), "parts": len(parts)}
    return ImportSummary(manifest.count, len(rejected), out, counts)
