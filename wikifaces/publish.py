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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import Progress

from shards import ShardWriter, dataset_fingerprint, is_complete, open_dataset
from shards.format import decode_image
from wikifaces.core.errors import MissingInput, UserError
from wikifaces.core.files import atomic_open, atomic_write_text
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import jsonl_line, read_jsonl
from wikifaces.core.version import code_version

CARRIED = ("key", "person_id", "person_ids", "title", "licence", "licence_url", "artist", "credit", "file", "url",
           "source_sha256", "box", "rank", "faces_in_image", "verify_score", "source_index", "source_format",
           "identity")
ATTRIBUTED = ("key", "title", "artist", "credit", "licence", "licence_url", "url", "file", "person_id")


class PublishConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(default="faces-64", pattern=r"^[A-Za-z0-9_.-]+$")
    source: Literal["faces", "lsun"] = "faces"
    category: str = Field(default="bedroom", pattern=r"^[A-Za-z0-9_.-]+$")  # for source = lsun
    size: Annotated[int | None, Field(ge=8, le=1024)] = 64
    # QOI, lossless, in blocks of 64 records a value: 4.4-5.3x a JPEG ImageFolder per item and 7.3-7.7x in
    # batches (2 cores; the anchor's speed varies between runs) at 1.98x its size on disk; JPEG q95 4:4:4
    # is the smallest (bench/shards_read.py, README's table)
    encoding: Literal["qoi", "jpeg", "png", "raw"] = "qoi"
    quality: Annotated[int, Field(ge=50, le=100)] = 95
    block: Annotated[int, Field(ge=1, le=4096)] = 64  # records per LMDB value (1: readable by format-1 readers)
    use_dedup: bool = True
    max_second_face_ratio: Annotated[float | None, Field(ge=0, le=1)] = None
    exclude_licences: tuple[str, ...] = ()
    # train/val/test by person: a person's faces are all on one side (no identity leaks from training
    # into evaluation); people are shuffled with `split_seed` and cut by these fractions
    split_by_person: bool = False
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0

    @model_validator(mode="after")
    def _split(self) -> PublishConfig:
        if any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions {self.split_fractions} must be three shares (train, val, test) "
                             "that add up to 1")
        if self.split_by_person and self.source != "faces":
            raise ValueError("split_by_person needs a faces dataset (LSUN records have no person)")
        return self


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


def publish_dataset(config: PublishConfig, root: str | os.PathLike[str] | DataRoot | None = None,
                    progress: bool = False) -> PublishSummary:
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
    licences, skipped, removed = _write_dataset(config, candidates, keep, out, progress)
    with atomic_open(out / "ATTRIBUTION.md", "w") as fh:  # streamed: millions of rows never sit in memory
        fh.writelines(attribution_lines(config, read_jsonl(out / "attribution.jsonl")))
    manifest = open_dataset(out).manifest
    atomic_write_text(out / "README.md", dataset_card(config, manifest, licences, removed, skipped))
    return PublishSummary(manifest.count, removed, dict(skipped), dict(licences), out)


def _write_dataset(config: PublishConfig, candidates: Path, keep: np.ndarray | None, out: Path,
                   progress: bool = False) -> tuple[Counter[str], Counter[str], int]:
    """The kept candidates, filtered and resized, into `out`'s shards, and each record's attribution
    into `out/attribution.jsonl` as it is written; (licences, skipped, duplicates removed)."""
    ds = open_dataset(candidates)
    keep = np.arange(len(ds)) if keep is None else keep
    if len(np.unique(keep)) != len(keep) or (len(keep) and not 0 <= int(keep.min()) <= int(keep.max()) < len(ds)):
        ds.close()
        raise UserError(f"dedup's keep.npy for {candidates} repeats records or names records the candidates lack: "
                           "run the dedup stage again")
    removed = len(ds) - len(keep)
    size = (config.size, config.size) if config.size else None
    licences: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    params = {**config.model_dump(mode="json"), "candidates": str(candidates), "candidates_fingerprint":
              dataset_fingerprint(candidates)}
    sides = (person_splits(config, (m for _, _, m in ds.iter_at(keep.tolist(), images=False)))
             if config.split_by_person else {})
    records: Counter[str] = Counter()
    per_person: Counter[str] = Counter()
    identity: Counter[str] = Counter()
    # Each record once, from a dataset whose writer checked its keys: unique by construction, so
    # the writer need not hold every key (3M keys would hold ~450 MB).
    with ShardWriter(out, name=config.dataset, image_size=size, encoding=config.encoding, quality=config.quality,
                     block=config.block, parameters=params, mode="overwrite", code_version=code_version(),
                     check_keys=False) as w, \
            atomic_open(out / "attribution.jsonl", "w") as attribution, \
            Progress(disable=not progress or len(keep) < 1000, transient=True) as bar:
        task = bar.add_task(f"publishing {config.dataset}", total=len(keep))
        for _, encoded, meta in ds.iter_at(keep.tolist()):  # unmapped as it goes: ~30 MB, not the candidates'
            bar.advance(task)
            if config.exclude_licences and meta.get("licence") in config.exclude_licences:
                skipped["licence excluded"] += 1
                continue
            ratio = meta.get("second_face_ratio")
            if config.max_second_face_ratio is not None and ratio and ratio > config.max_second_face_ratio:
                skipped["second face too large"] += 1
                continue
            image = decode_image(encoded)
            if size is not None and image.shape[:2] != size:
                image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
            carried = {k: meta[k] for k in CARRIED if k in meta}
            if sides:
                carried["split"] = sides[str(meta.get("person_id"))]
                records[carried["split"]] += 1
            w.add(image, carried)
            per_person[str(meta.get("person_id"))] += 1
            identity[(meta.get("identity") or {}).get("status", "not checked")] += 1
            licences[meta.get("licence") or "unknown"] += 1
            row = {"index": w.count - 1, **{k: meta.get(k) for k in ATTRIBUTED}}
            attribution.write(jsonl_line(row))
        w.summary.update({"licences": dict(licences), "source": config.source, "duplicates_removed": removed,
                          "skipped": dict(skipped)})
        if config.source == "faces":
            w.summary["people"] = people_summary(w.count, per_person, identity)
        if sides:
            w.summary["split"] = {"by": "person_id", "seed": config.split_seed,
                                  "fractions": dict(zip(SPLITS, config.split_fractions, strict=True)),
                                  "people": dict(Counter(sides.values())), "records": dict(records)}
    ds.close()
    return licences, skipped, removed


SPLITS = ("train", "val", "test")


def people_summary(records: int, per_person: Counter[str], identity: Counter[str]) -> dict[str, Any]:
    """How the published faces spread over people, and what the identity check said of them."""
    return {"people": len(per_person), "records": records,
            "images_per_person": {str(n): k for n, k in sorted(Counter(per_person.values()).items())},
            "identity": dict(identity)}


def _block_text(block: int) -> str:
    return f" in blocks of {block} records per LMDB value" if block > 1 else ""


def _people_lines(people: dict[str, Any] | None) -> str:
    """The card's people section: a histogram of images per person and the identity verdicts."""
    if not people:
        return ""
    hist = people["images_per_person"]
    top = max(hist.values(), default=1)
    rows = "\n".join(f"| {n} | {k} | {'█' * max(1, round(20 * k / top))} |" for n, k in hist.items())
    verdicts = ", ".join(f"{n} {md(k.replace('_', ' '))}" for k, n in sorted(people["identity"].items()))
    return f"""
## People

{people['records']} images of {people['people']} people. Identity check (dlib face descriptors against
each person's lead-image face): {verdicts}. `identity_unchecked` marks people with a single face,
nothing to compare it with.

| images per person | people | |
|---|---|---|
{rows}
"""


def person_splits(config: PublishConfig, metas: Any) -> dict[str, str]:
    """person_id -> train/val/test: the distinct people, sorted, shuffled with the seed, cut by
    the fractions (rounded; every share that is not zero gets at least one person when there are enough)."""
    people = sorted({str(m.get("person_id")) for m in metas})
    order = np.random.default_rng(config.split_seed).permutation(len(people))
    n = len(people)
    counts = [round(f * n) for f in config.split_fractions]
    for k, f in enumerate(config.split_fractions):
        if f > 0 and counts[k] == 0 and n >= len(SPLITS):
            counts[k] = 1
    counts[0] = n - counts[1] - counts[2]
    cuts = np.cumsum(counts)
    return {people[j]: SPLITS[int(np.searchsorted(cuts, pos, side="right"))] for pos, j in enumerate(order)}


def attribution_lines(config: PublishConfig, rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """ATTRIBUTION.md, a line at a time."""
    yield from (line + "\n" for line in (
        f"# Attribution: {md(config.dataset)}", "",
        "Every image in this dataset, with its source, author and licence as Wikimedia Commons states them.",
        "", "| # | subject | artist | licence | source |", "|---|---|---|---|---|"))
    for r in rows:
        licence = md(r.get("licence"))
        if r.get("licence_url"):
            licence = f"[{licence}](<{md(r['licence_url'])}>)"
        source = f"[{md(r.get('file') or 'file')}](<{md(r['url'])}>)" if r.get("url") else md(r.get("file"))
        yield f"| {r['index']} | {md(r.get('title'))} | {md(r.get('artist'))} | {licence} | {source} |\n"


def _split_line(split: dict[str, Any] | None) -> str:
    if not split:
        return ""
    parts = ", ".join(f"{name} {split['records'].get(name, 0)} images of {split['people'].get(name, 0)} people"
                      for name in SPLITS)
    return (f"\n- **Split by person** (seed {split['seed']}; no person on two sides): {parts}; each record's "
            "`split` says which (`ds.where('split', 'train')` gives the indices).")


def dataset_card(config: PublishConfig, manifest: Any, licences: Counter[str], removed: int,
                 skipped: Counter[str]) -> str:
    size = f"{manifest.image.height}x{manifest.image.width}" if manifest.image.height else "varying sizes"
    rows = "\n".join(f"| {md(name)} | {n} |" for name, n in licences.most_common())
    skipped_text = ", ".join(f"{n} {md(k)}" for k, n in skipped.items()) or "none"
    source = ("portraits of people with English Wikipedia articles or Wikidata items: their articles' lead images, "
              "Wikidata images (P18), Commons categories (P373) and the Commons files that depict them (P180), with "
              "their Wikimedia Commons licences; faces found with OpenCV's Haar cascade, checked with MTCNN, "
              "cropped square, each checked to be the person (dlib face descriptors)"
              if config.source == "faces" else f"LSUN {md(config.category)}, normalised and centre-cropped")
    return f"""# {md(config.dataset)}

{manifest.count} images, {size}, {manifest.image.encoding.upper()}{_block_text(manifest.image.block)}, in \
{len(manifest.shards)} LMDB shards (format version {manifest.format_version}).

- **Source**: {source}.
- **Near-duplicates removed**: {removed} (perceptual hashes; see the dedup stage's gallery).
- **Skipped by publication filters**: {skipped_text}.{_split_line(manifest.summary.get("split"))}
- **Built by**: wikifaces {md(manifest.provenance.code_version)} on {md(manifest.provenance.created)}.
{_people_lines(manifest.summary.get("people"))}
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

