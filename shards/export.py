"""Export a dataset to an image folder or to WebDataset tar shards.

File names are record indices (zero-padded), never record keys or anything scraped.
Image bytes are copied as stored: nothing is re-encoded.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Literal

from .files import atomic_open
from .format import EXTENSIONS, ShardError
from .reader import open_dataset

ExportFormat = Literal["folder", "webdataset"]


def export_dataset(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    to: ExportFormat = "folder",
    records_per_tar: int = 10_000,
) -> int:
    """Write every record of the dataset at `path` under `out`; returns the record count.

    folder: `out/00000000.<ext>` ... plus `out/metadata.jsonl`, one object a line: the record's
        metadata and `file_name`, the exported image's name, as Hugging Face's `imagefolder`
        loader expects it (`file` stays whatever the metadata says, e.g. the Commons file name).
    webdataset: `out/shard-00000.tar` ... each holding `00000000.<ext>` + `00000000.json` pairs.
    `<ext>` is the dataset's encoding: `jpg`, `png` or `webp`, the bytes as stored.
    """
    ds = open_dataset(path)
    ext = EXTENSIONS[ds.manifest.image.encoding]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise ShardError(f"export target {out_dir} is not empty")
    if to == "folder":
        with atomic_open(out_dir / "metadata.jsonl", "w") as index:
            for i, data, meta in ds.iter_encoded():
                name = f"{i:08d}{ext}"
                with atomic_open(out_dir / name) as fh:
                    fh.write(data)
                index.write(json.dumps({**meta, "file_name": name}, ensure_ascii=False) + "\n")
    elif to == "webdataset":
        for part, start in enumerate(range(0, len(ds), records_per_tar)):
            with atomic_open(out_dir / f"shard-{part:05d}.tar") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
                for i, data, meta in ds.iter_encoded(start, start + records_per_tar):
                    payloads = ((ext, data), (".json", json.dumps(meta, ensure_ascii=False).encode()))
                    for suffix, payload in payloads:
                        info = tarfile.TarInfo(f"{i:08d}{suffix}")
                        info.size = len(payload)
                        info.mode = 0o644
                        tar.addfile(info, io.BytesIO(payload))
    else:
        raise ValueError(f"export format must be 'folder' or 'webdataset', not {to!r}")
    return len(ds)
