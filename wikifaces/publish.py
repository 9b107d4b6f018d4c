"""Stage `publish`: a candidate set plus a dedup keep list into a dataset others can use.

`data/processed/<dataset>/` gets the shards (images resized to the published size), the
manifest (with a licence summary), a dataset card `README.md`, and the attribution of every
image (`ATTRIBUTION.md` for people, `attribution.jsonl` for programs). Text that came from
Wikipedia or Commons (titles, artists, credits) is untrusted: it is escaped wherever it is
written into Markdown, and never used in a path.
"""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shards import ShardWriter, dataset_fingerprint, is_complete, open_dataset
from shards.format import decode_image
from wikifaces.core.errors import MissingInput
from wikifaces.core.files import atomic_write_text
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import write_jsonl
from wikifaces.core.version import code_version

CARRIED = ("key", "person_id", "person_ids", "title", "licence", "licence_url", "artist", "credit", "file", "url",
           "source_sha256", "box", "rank", "faces_in_image", "verify_score", "source_index", "source_format")
ATTRIBUTED = ("key", "title", "artist", "credit", "licence", "licence_url", "url", "file", "person_id")


class PublishConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(default="faces-64", pattern=r"^[A-Za-z0-9_.-]+$")
    source: Literal["faces", "lsun"] = "faces"
    category: str = Field(default="bedroom", pattern=r"^[A-Za-z0-9_.-]+$")  # for source = lsun
    size: Annotated[int | None, Field(ge=8, le=1024)] = 64
    # JPEG at 95 with 4:4:4 chroma: the smallest; qoi and raw are lossless and read faster, at 2x and
    # 4x the size on disk (bench/shards_read.py, the README's table)
    encoding: Literal["jpeg", "png", "qoi", "raw"] = "jpeg"
    quality: Annotated[int, Field(ge=50, le=100)] = 95
    use_dedup: bool = True
    max_second_face_ratio: Annotated[float | None, Field(ge=0, le=1)] = None
    exclude_licences: tuple[str, ...] = ()


def candidate_paths(config: PublishConfig, root: DataRoot) -> tuple[Path, Path]:
    """(candidate shard dataset, dedup folder) for the source."""
    base = root.candidates(config.source, config.category)
    return base / "shards", base / "dedup"


def md(text: Any) -> str:
    """Untrusted text made safe for Markdown (and the HTML it may be rendered into)."""
    if text is None:
        return ""
    s = html.escape(" ".join(str(text).split()), quote=True)
    return re.sub(r"([\\`*_{}\[\]()#+!|~>-])", r"\\\1", s)


@dataclass
class PublishSummary:
    records: int
    duplicates_removed: int
    skipped: dict[str, int]
    licences: dict[str, int]
    output: Path

    @property
    def counts(self) -> dict[str, Any]:
        return {"records": self.records, "duplicates_removed": self.duplicates_removed, "skipped": self.skipped,
                "licences": self.licences}


def publish_dataset(config: PublishConfig, root: str | os.PathLike[str] | DataRoot | None = None) -> PublishSummary:
    """Write the published dataset: shards, card, attribution."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    candidates, dedup_dir = candidate_paths(config, data)
    if not is_complete(candidates):
        raise MissingInput(f"no candidate set at {candidates}: run the stages before publish first")
    keep = None
    if config.use_dedup:
        keep_file = dedup_dir / "keep.npy"
        if not keep_file.exists():
            raise MissingInput(f"{keep_file} does not exist: run the dedup stage first (or use_dedup=False)")
        keep = np.load(keep_file)
    out = data.processed(config.dataset)
    licences, skipped, attribution, removed = _write_dataset(config, candidates, keep, out)
    write_jsonl(out / "attribution.jsonl", attribution)
    atomic_write_text(out / "ATTRIBUTION.md", attribution_markdown(config, attribution))
    manifest = open_dataset(out).manifest
    atomic_write_text(out / "README.md", dataset_card(config, manifest, licences, removed, skipped))
    return PublishSummary(manifest.count, removed, dict(skipped), dict(licences), out)


def _write_dataset(config: PublishConfig, candidates: Path, keep: np.ndarray | None, out: Path
                   ) -> tuple[Counter[str], Counter[str], list[dict[str, Any]], int]:
    """The kept candidates, filtered and resized, into `out`'s shards; (licences, skipped,
    attribution rows, duplicates removed)."""
    ds = open_dataset(candidates)
    keep = np.arange(len(ds)) if keep is None else keep
    removed = len(ds) - len(keep)
    size = (config.size, config.size) if config.size else None
    licences: Counter[str] = Counter()
    attribution: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    params = {**config.model_dump(mode="json"), "candidates": str(candidates), "candidates_fingerprint":
              dataset_fingerprint(candidates)}
    with ShardWriter(out, name=config.dataset, image_size=size, encoding=config.encoding, quality=config.quality,
                     parameters=params, mode="overwrite", code_version=code_version()) as w:
        for i in keep.tolist():
            meta = ds.read_meta(int(i))
            if config.exclude_licences and meta.get("licence") in config.exclude_licences:
                skipped["licence excluded"] += 1
                continue
            ratio = meta.get("second_face_ratio")
            if config.max_second_face_ratio is not None and ratio and ratio > config.max_second_face_ratio:
                skipped["second face too large"] += 1
                continue
            image = decode_image(ds.read_bytes(int(i)))
            if size is not None and image.shape[:2] != size:
                image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
            w.add(image, {k: meta[k] for k in CARRIED if k in meta})
            licences[meta.get("licence") or "unknown"] += 1
            attribution.append({"index": w.count - 1, **{k: meta.get(k) for k in ATTRIBUTED}})
        w.summary.update({"licences": dict(licences), "source": config.source, "duplicates_removed": removed,
                          "skipped": dict(skipped)})
    ds.close()
    return licences, skipped, attribution, removed


def attribution_markdown(config: PublishConfig, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Attribution: {md(config.dataset)}", "",
             "Every image in this dataset, with its source, author and licence as Wikimedia Commons states them.",
             "", "| # | subject | artist | licence | source |", "|---|---|---|---|---|"]
    for r in rows:
        licence = md(r.get("licence"))
        if r.get("licence_url"):
            licence = f"[{licence}](<{md(r['licence_url'])}>)"
        source = f"[{md(r.get('file') or 'file')}](<{md(r['url'])}>)" if r.get("url") else md(r.get("file"))
        lines.append(f"| {r['index']} | {md(r.get('title'))} | {md(r.get('artist'))} | {licence} | {source} |")
    return "\n".join(lines) + "\n"


def dataset_card(config: PublishConfig, manifest: Any, licences: Counter[str], removed: int,
                 skipped: Counter[str]) -> str:
    size = f"{manifest.image.height}x{manifest.image.width}" if manifest.image.height else "varying sizes"
    rows = "\n".join(f"| {md(name)} | {n} |" for name, n in licences.most_common())
    skipped_text = ", ".join(f"{n} {md(k)}" for k, n in skipped.items()) or "none"
    source = ("portraits from the lead images of English Wikipedia articles about people, with their Wikimedia "
              "Commons licences; faces found with OpenCV's Haar cascade, checked with MTCNN, cropped square"
              if config.source == "faces" else f"LSUN {md(config.category)}, normalised and centre-cropped")
    return f"""# {md(config.dataset)}

{manifest.count} images, {size}, {manifest.image.encoding.upper()}, in {len(manifest.shards)} LMDB shards.

- **Source**: {source}.
- **Near-duplicates removed**: {removed} (perceptual hashes; see the dedup stage's gallery).
- **Skipped by publication filters**: {skipped_text}.
- **Built by**: wikifaces {md(manifest.provenance.code_version)} on {md(manifest.provenance.created)}.

## Licences

| licence | images |
|---|---|
{rows}

Every image's title, artist, licence and source URL are in `ATTRIBUTION.md` and
`attribution.jsonl`. Reusers must follow each image's licence (attribution, share-alike).

## How to load it

From the folder that holds `{config.dataset}/` (the name is a checked identifier, never escaped
inside code):

```python
from shards import open_dataset

ds = open_dataset({config.dataset!r})
image, meta = ds[0]                          # RGB uint8 HxWx3 and a dict (licence, artist, ...)
batch = ds.read_images(range(min(64, len(ds))))  # (n, H, W, 3) uint8

from shards.torch import ShardDataset        # a torch Dataset (uint8 CxHxW tensors)

x = ShardDataset({config.dataset!r})[0]
```

Check integrity with `wikifaces verify .` (sha256 of every shard, against `manifest.json`).

## Limitations

Wikipedia's biographies over-represent some regions, eras and professions, and the lead image
is whatever the article shows; the face detector favours frontal, well-lit faces. Do not use
this dataset to identify people.
"""

