"""Export a dataset to an image folder or to WebDataset tar shards.

File names are record indices (zero-padded), never record keys or anything scraped.
JPEG, PNG and WebP bytes are copied as stored; QOI and raw, which the ecosystem's loaders do not
read, become PNG: lossless, the same pixels.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from .files import atomic_open
from .format import EXTENSIONS, ShardError, decode_image
from .reader import Dataset, open_dataset

ExportFormat = Literal["folder", "webdataset", "parquet", "identity-folders"]
# a folder name taken from metadata only when it is this plain (a Wikidata QID is); otherwise a hash
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def export_dataset(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    to: ExportFormat = "folder",
    records_per_tar: int = 10_000,
    group_key: str = "person_id",
) -> int:
    """Write every record of the dataset at `path` under `out`; returns the record count.

    folder: `out/00000000.<ext>` ... plus `out/metadata.jsonl`, one object a line: the record's
        metadata and `file_name`, the exported image's name, as Hugging Face's `imagefolder`
        loader expects it (`file` stays whatever the metadata says, e.g. the Commons file name).
    webdataset: `out/shard-00000.tar` ... each holding `00000000.<ext>` + `00000000.json` pairs.
    parquet: `out/data/train-00000-of-0000N.parquet` (an `image` column of {bytes, path} and one
        column per metadata key) and `out/README.md` with the YAML header Hugging Face's loader
        reads: `datasets.load_dataset(out)` gives an image dataset.
    identity-folders: `out/<person_id>/<n>.<ext>` (n counts that person's records from 0), the
        layout face-recognition tools read (one folder per identity), and `out/metadata.jsonl`
        with `file_name` (Hugging Face's `imagefolder` then labels records by folder). The folder
        is the record's `group_key` value (`person_id`, a Wikidata QID) when it is a plain name,
        else `id-<sha256 of it, 16 hex>`: scraped text never becomes a path.
    `<ext>` is the dataset's encoding: `jpg`, `png` or `webp`, the bytes as stored; `png` for QOI
    and raw datasets.
    """
    ds = open_dataset(path)
    ext, convert = exported_form(ds.manifest.image.encoding)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise ShardError(f"export target {out_dir} is not empty")
    if to == "folder":
        with atomic_open(out_dir / "metadata.jsonl", "w") as index:
            for i, data, meta in ds.iter_encoded():
                name = f"{i:08d}{ext}"
                with atomic_open(out_dir / name) as fh:
                    fh.write(convert(data))
                index.write(json.dumps({**meta, "file_name": name}, ensure_ascii=False) + "\n")
    elif to == "webdataset":
        for part, start in enumerate(range(0, len(ds), records_per_tar)):
            with atomic_open(out_dir / f"shard-{part:05d}.tar") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
                for i, data, meta in ds.iter_encoded(start, start + records_per_tar):
                    payloads = ((ext, convert(data)), (".json", json.dumps(meta, ensure_ascii=False).encode()))
                    for suffix, payload in payloads:
                        info = tarfile.TarInfo(f"{i:08d}{suffix}")
                        info.size = len(payload)
                        info.mode = 0o644
                        tar.addfile(info, io.BytesIO(payload))
    elif to == "parquet":
        _export_parquet(ds, out_dir, ext, convert, records_per_tar)
    elif to == "identity-folders":
        _export_identity_folders(ds, out_dir, ext, convert, group_key)
    else:
        raise ValueError(f"export format must be 'folder', 'webdataset', 'parquet' or 'identity-folders', not {to!r}")
    return len(ds)


def exported_form(encoding: str) -> tuple[str, Callable[[bytes], bytes]]:
    """(file extension, bytes converter) of exported images in a dataset of this encoding."""
    if encoding in ("qoi", "raw"):
        return ".png", _to_png
    return EXTENSIONS[encoding], lambda data: data


def _to_png(data: bytes) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(decode_image(data), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ShardError("OpenCV could not encode an image as PNG")
    return buf.tobytes()


def identity_folder(value: Any) -> str:
    """The folder name of an identity: the value itself when plain, else a hash of it."""
    text = str(value)
    return text if _SAFE_NAME.match(text) else "id-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _export_identity_folders(ds: Dataset, out_dir: Path, ext: str, convert: Callable[[bytes], bytes],
                             group_key: str) -> None:
    seen: dict[str, int] = {}
    with atomic_open(out_dir / "metadata.jsonl", "w") as index:
        for i, data, meta in ds.iter_encoded():
            value = meta.get(group_key)
            if value in (None, ""):
                raise ShardError(f"record {i} has no {group_key!r}: identity folders need it in every record "
                                 "(published face datasets carry it)")
            folder = identity_folder(value)
            n = seen.get(folder, 0)
            seen[folder] = n + 1
            (out_dir / folder).mkdir(exist_ok=True)
            name = f"{folder}/{n}{ext}"
            with atomic_open(out_dir / name) as fh:
                fh.write(convert(data))
            index.write(json.dumps({**meta, "file_name": name}, ensure_ascii=False) + "\n")


def _export_parquet(ds: Dataset, out_dir: Path, ext: str, convert: Callable[[bytes], bytes], per_file: int) -> None:
    """Parquet files Hugging Face `datasets` reads as an image dataset, without needing it here:
    the column types are unified over every record's metadata first (a column all null in one file
    and text in another would not concatenate), and the features go into the schema's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    metas = ds.iter_meta()
    schemas = [pa.Table.from_pylist(chunk).schema for chunk in _chunks(metas, 10_000)]
    meta_schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [pa.field("image", image), *(f for f in meta_schema if f.name != "image")]
    features = {"image": {"_type": "Image"}, **{f.name: _hf_feature(f.type) for f in fields[1:]}}
    schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})
    files = max(1, -(-len(ds) // per_file))
    (out_dir / "data").mkdir()
    for part, start in enumerate(range(0, max(len(ds), 1), per_file)):
        rows = [{**meta, "image": {"bytes": convert(data), "path": f"{i:08d}{ext}"}}
                for i, data, meta in ds.iter_encoded(start, start + per_file)]
        with atomic_open(out_dir / "data" / f"train-{part:05d}-of-{files:05d}.parquet") as fh:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), fh)
    card = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            "    path: data/train-*.parquet\n---\n\n"
            f"# {ds.manifest.name}\n\n{len(ds)} images exported from a wikifaces shard dataset "
            "(its own card, licences and attribution travel with the original).\n")
    with atomic_open(out_dir / "README.md", "w") as fh:
        fh.write(card)


def _chunks(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _hf_feature(arrow_type: Any) -> Any:
    """A Hugging Face feature, as `datasets.Features.from_dict` reads it, for an Arrow type."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        return {arrow_type.field(k).name: _hf_feature(arrow_type.field(k).type) for k in range(arrow_type.num_fields)}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return [_hf_feature(arrow_type.value_type)]
    return {"dtype": str(arrow_type), "_type": "Value"}
