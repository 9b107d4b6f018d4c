"""Stage `identity`: is each kept face the person it is filed under?

A name's web images often show someone else: a colleague in the same category, a group photo, a
painting of an ancestor. Every kept face gets dlib's 128-d face descriptor (`judge.describe`:
public-domain models shipped in `face-recognition-models`, never downloaded); then, per person:

* the reference is the face of their lead or Wikidata image (P18) when that image holds exactly
  one kept face; else the face of a file Commons' structured data says depicts them (P180; the
  medoid when several such files hold one face each); otherwise the medoid of the largest tight
  group of their faces (faces within `group_distance` of each other), when that group is clearly
  the largest;
* a face within `threshold` of the reference is `verified`, farther is `other_person`; in one
  photograph at most one face is the person (the nearest);
* a person with one face is `identity_unchecked` (kept unless `keep_unchecked` is off) when it
  comes from their lead, Wikidata or depicts image; a lone face found only in their Commons
  category (which also holds other people's photographs) is `ambiguous_identity`, as are the faces
  of people with several faces and no clear reference.

Descriptors are journalled per face as they are computed (a killed run resumes per batch, and a
new threshold re-decides without describing again). The
output is the identity-checked candidate set (`interim/faces/checked/shards`, the input of dedup
and publish), `identity.jsonl` with one row per person and face, and `descriptors.npy`.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shards import ShardWriter, is_complete, open_dataset
from wikifaces.core.errors import MissingInput
from wikifaces.core.executor import Executor, fan_out
from wikifaces.core.files import atomic_write_bytes, recover_swap, swap_dir
from wikifaces.core.identity import config_hash, stage_key
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import Journal, read_jsonl, write_jsonl
from wikifaces.core.version import code_version

from .config import IdentityConfig

log = logging.getLogger("wikifaces.faces")

CHECKED_DIR = "checked"
IDENTITY_FILE = "identity.jsonl"
JOURNAL_FILE = "descriptors.jsonl"  # every face's descriptor, appended as computed: kept across runs
DESCRIPTORS_FILE = "descriptors.npy"
SHEET_FILE = "identity-people.png"
# borders of the people sheet (RGB): what the check said about each face
STATUS_COLOURS = {"verified": (46, 160, 67), "identity_unchecked": (150, 150, 150), "other_person": (215, 40, 40),
                  "ambiguous_identity": (240, 150, 20)}
ANCHOR_ROUTES = ("lead", "p18")  # the person's own portrait: level 2
DEPICTS_ROUTES = ("depicts",)  # Commons' structured data says the file depicts them: level 1

# A face's identity status for one person: a closed set.
IdentityStatus = Literal["verified", "identity_unchecked", "other_person", "ambiguous_identity"]
KEPT: tuple[IdentityStatus, ...] = ("verified", "identity_unchecked")
SLIM = ("key", "person_id", "person_ids", "source_sha256")  # the metadata the check reads


@dataclass
class IdentitySummary:
    people: int
    faces: int
    kept: int
    statuses: dict[IdentityStatus, int]
    output: Path
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Face:
    """One kept face as one person's candidate."""

    key: str
    source: str  # the source image's sha256
    descriptor: np.ndarray
    anchor: int  # 2: from the person's lead or Wikidata image, 1: from a file that depicts them, 0: category only


@dataclass
class Verdict:
    status: IdentityStatus
    distance: float | None
    reference: str | None  # "anchor", "group" or None
    reason: str = ""


# -- the decision, per person (pure: tested on its own) --------------------------------------------------------------
def check_person(faces: list[Face], config: IdentityConfig) -> list[Verdict]:
    """The verdict on each of one person's faces (in their order)."""
    if not faces:
        return []
    if len(faces) == 1:
        if faces[0].anchor:
            return [Verdict("identity_unchecked", None, None, "the only face of this person: nothing to compare with")]
        return [Verdict("ambiguous_identity", None, None, "the only face, found only in the Commons category "
                        "(which also holds other people's photographs): nothing says it is this person")]
    v = np.stack([f.descriptor for f in faces])
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    reference, how = _reference(faces, d, config)
    if reference is None:
        return [Verdict("ambiguous_identity", None, None, how) for _ in faces]
    dist = d[reference]
    verdicts = []
    for i in range(len(faces)):
        if dist[i] <= config.threshold:
            verdicts.append(Verdict("verified", float(dist[i]), how))
        else:
            verdicts.append(Verdict("other_person", float(dist[i]), how,
                                    f"descriptor distance {dist[i]:.2f} to the reference > {config.threshold}"))
    # one photograph shows the person at most once: the nearest of its verified faces
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(faces):
        if verdicts[i].status == "verified":
            by_source[f.source].append(i)
    for idx in by_source.values():
        best = min(idx, key=lambda i: (dist[i], i))
        for i in idx:
            if i != best:
                verdicts[i] = Verdict("other_person", float(dist[i]), how,
                                      f"another face in the same image is nearer to the reference ({dist[best]:.2f})")
    return verdicts


def _reference(faces: list[Face], d: np.ndarray, config: IdentityConfig) -> tuple[int | None, str]:
    """(index of the reference face, how it was chosen) or (None, why there is none)."""
    for level, how in ((2, "anchor"), (1, "depicts")):
        singles = []  # faces alone in their image, from this level's images, in the images' order
        for src in dict.fromkeys(f.source for f in faces if f.anchor == level):
            in_src = [i for i, f in enumerate(faces) if f.source == src and f.anchor == level]
            if len(in_src) == 1:
                singles.append(in_src[0])
        if singles and level == 2:
            return singles[0], how  # the lead image before the Wikidata image
        if singles:
            return singles[int(np.argmin(d[np.ix_(singles, singles)].sum(axis=1)))], how
    close = d <= config.group_distance
    sizes = close.sum(axis=1)
    best = int(np.argmax(sizes))
    group = np.flatnonzero(close[best])
    if len(group) < 2:
        return None, "no two faces of this person agree (no lead image with exactly one face)"
    rest = np.setdiff1d(np.arange(len(faces)), group)
    runner_up = int(close[np.ix_(rest, rest)].sum(axis=1).max()) if len(rest) else 0
    if runner_up >= len(group):
        return None, f"two groups of faces of equal size ({len(group)}) disagree; no lead image with one face"
    medoid = group[int(np.argmin(d[np.ix_(group, group)].sum(axis=1)))]
    return int(medoid), "group"


# -- descriptors (a unit of fan-out) -----------------------------------------------------------------------------------
def describe_batch(part: tuple[str, list[int]], margin: float) -> list[tuple[str, str]]:
    """(face key, descriptor as base64 float32) for the records `part` names in the candidate shards."""
    import cv2

    from .judge import FaceJudge

    cv2.setNumThreads(1)  # the batches are the parallelism
    path, indices = part
    ds = open_dataset(path)
    try:
        judge = FaceJudge(margin=margin)
        images = ds.read_images(indices, threads=1)
        desc = judge.describe(images)
        keys = [ds.read_meta(i)["key"] for i in indices]
    finally:
        ds.close()
    return [(k, base64.b64encode(v.astype(np.float32).tobytes()).decode()) for k, v in zip(keys, desc, strict=True)]


def _decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), np.float32)


# -- the stage --------------------------------------------------------------------------------------------------------
def item_hash(root: DataRoot) -> str:
    """What decides a face's descriptor: the model (its files' versions are in the code
    fingerprint's dependencies) and the crop, never the thresholds, so a new threshold re-decides
    from the journalled descriptors without describing again."""
    key = root.faces / "faces.key"  # the detect results hash the crops were made under
    crops = key.read_text().strip() if key.exists() else "unknown"
    return config_hash({"descriptor": "dlib128-resnet-v1", "crops": crops})


def _journal(root: DataRoot) -> Journal:
    return Journal(root.faces / JOURNAL_FILE, key=lambda r: r["key"], version=stage_key(item_hash(root)))


def journalled_descriptors(root: str | os.PathLike[str] | DataRoot | None = None) -> dict[str, np.ndarray]:
    """Face key -> descriptor, for every face described for the current crops."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    return {k: _decode(r["d"]) for k, r in _journal(data).rows()}


def reset_identity(root: DataRoot) -> None:
    (root.faces / JOURNAL_FILE).unlink(missing_ok=True)


def check_identities(config: IdentityConfig, root: str | os.PathLike[str] | DataRoot | None = None,
                     progress: bool = True, force: bool = False, executor: Executor | None = None) -> IdentitySummary:
    """Describe every kept face (resumable per batch), check each person's faces, write the checked set."""
    from .judge import descriptor_version

    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    candidates = data.faces / "shards"
    images_path = data.raw_wikipedia / "images.jsonl"
    if not is_complete(candidates):
        raise MissingInput(f"{candidates} is not a complete dataset: run the detect stage first")
    if not images_path.exists():
        raise MissingInput(f"{images_path} does not exist: run the images stage first")
    if force:
        reset_identity(data)
    recover_swap(data.faces / CHECKED_DIR / "shards")
    ds = open_dataset(candidates)
    # Per face only what the check reads (its full metadata is read again for the faces written)
    # and its descriptor in one float32 matrix: a million people's faces fit in memory.
    metas = [{k: m[k] for k in SLIM if k in m} for m in ds.iter_meta()]
    margin = float(ds.manifest.provenance.parameters.get("margin", 0.25))
    ds.close()
    index = {m["key"]: i for i, m in enumerate(metas)}
    descriptors = np.zeros((len(metas), 128), np.float32)
    described = np.zeros(len(metas), bool)
    journal = _journal(data)

    def record(result: list[tuple[str, str]]) -> None:
        for key, b64 in result:
            journal.append({"key": key, "d": b64})
            i = index[key]
            descriptors[i], described[i] = _decode(b64), True

    for key, row in journal.rows():  # streamed: the journal holds every face ever described
        if (i := index.get(key)) is not None:
            descriptors[i], described[i] = _decode(row["d"]), True
    todo = np.flatnonzero(~described).tolist()
    parts = [(str(candidates), todo[i : i + config.batch_size]) for i in range(0, len(todo), config.batch_size)]
    try:
        fan_out(executor, describe_batch, parts, margin, on_result=record, label="describing faces",
                progress=progress, workers=config.workers)
    finally:
        journal.close()
    rows = verdict_rows(config, metas, descriptors, image_routes(images_path))
    kept = _write_checked(data, config, rows, descriptors, descriptor_version())
    people_sheet(candidates, rows, data.faces / SHEET_FILE)
    statuses = Counter(r["status"] for r in rows)
    people = {r["person_id"] for r in rows}
    per_person = Counter(r["person_id"] for r in rows if r["status"] in KEPT and (config.keep_unchecked
                                                                                  or r["status"] == "verified"))
    counts = {"people": len(people), "faces": len(metas), "kept": kept, "statuses": dict(statuses),
              "described_now": len(todo), "model": descriptor_version(),
              "people_verified": len({r["person_id"] for r in rows if r["status"] == "verified"}),
              "faces_per_person": dict(sorted(Counter(per_person.values()).items())),
              "references": dict(Counter(r["reference"] for r in rows if r["reference"]))}
    return IdentitySummary(len(people), len(metas), kept, dict(statuses), data.faces / IDENTITY_FILE, counts)


def image_routes(images_path: Path) -> dict[tuple[str, str], set[str]]:
    """(person, source sha256) -> the routes by which that person reached that image."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in read_jsonl(images_path):
        if r.get("status") == "ok" and r.get("sha256"):
            out[(r["person_id"], r["sha256"])].update(r.get("routes") or ["lead"])
    return out


def anchor_level(routes: set[str]) -> int:
    """How much a face's routes say about whose it is: 2 the person's portrait, 1 depicts, 0 neither."""
    return 2 if routes & set(ANCHOR_ROUTES) else 1 if routes & set(DEPICTS_ROUTES) else 0


def verdict_rows(config: IdentityConfig, metas: list[dict[str, Any]], descriptors: np.ndarray,
                  routes: dict[tuple[str, str], set[str]]) -> list[dict[str, Any]]:
    """One row per (person, face): every person whose images hold the face. `descriptors` row i
    is record i's (metas[i]) descriptor."""
    by_person: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(metas):
        for pid in dict.fromkeys(m.get("person_ids") or [m["person_id"]]):
            by_person[pid].append(i)
    rows = []
    for pid, idx in by_person.items():
        faces = [Face(metas[i]["key"], metas[i]["source_sha256"], descriptors[i],
                      anchor_level(routes.get((pid, metas[i]["source_sha256"]), set()))) for i in idx]
        for i, f, v in zip(idx, faces, check_person(faces, config), strict=True):
            rows.append({"person_id": pid, "key": f.key, "index": i, "source_sha256": f.source, "anchor": f.anchor,
                         "status": v.status, "distance": None if v.distance is None else round(v.distance, 4),
                         "reference": v.reference, "reason": v.reason})
    return rows


def _write_checked(data: DataRoot, config: IdentityConfig, rows: list[dict[str, Any]], descriptors: np.ndarray,
                   model: str) -> int:
    """The checked candidate set: each kept face once, filed under the person it is verified for
    (or, unchecked, the first person it came with); `person_ids` lists every person it is kept for."""
    keep = set(KEPT if config.keep_unchecked else ("verified",))
    rank = {"verified": 0, "identity_unchecked": 1}
    chosen: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] in keep:
            chosen[r["index"]].append(r)
    out = data.faces / CHECKED_DIR
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "shards.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    src = open_dataset(data.faces / "shards")
    m = src.manifest
    order = sorted(chosen)
    size = (m.image.height, m.image.width) if m.image.height and m.image.width else None
    with ShardWriter(tmp, name="faces-checked", image_size=size, encoding=m.image.encoding,
                     parameters={**m.provenance.parameters, "identity": config.model_dump(mode="json"),
                                 "descriptor": model},
                     code_version=code_version()) as w:
        licences: Counter[str] = Counter()
        for i in order:
            best = min(chosen[i], key=lambda r: (rank[r["status"]], r["distance"] or 0.0))
            meta = {**src.read_meta(i), "person_id": best["person_id"],
                    "person_ids": [r["person_id"] for r in chosen[i]],
                    "identity": {"status": best["status"], "distance": best["distance"],
                                 "reference": best["reference"], "model": model}}
            w.add_encoded(src.read_bytes(i), meta)
            licences[meta.get("licence") or "unknown"] += 1
        w.summary["licences"] = dict(licences)
        w.summary["identity"] = dict(Counter(r["status"] for r in rows))
    src.close()
    descs = descriptors[np.array(order, np.int64)]
    buf = io.BytesIO()
    np.save(buf, descs)
    atomic_write_bytes(out / DESCRIPTORS_FILE, buf.getvalue())  # row i: record i of the checked set
    write_jsonl(data.faces / IDENTITY_FILE, rows)
    swap_dir(tmp, out / "shards")
    return len(order)


def people_sheet(candidates: Path, rows: list[dict[str, Any]], path: Path, people: int = 8, per_person: int = 10
                 ) -> None:
    """A picture of the check: one line per person (those with the most faces), each face framed
    by its verdict (green verified, red another person, orange ambiguous, grey unchecked)."""
    import cv2

    from shards.sheet import contact_sheet, write_png

    by_person: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_person[r["person_id"]].append(r)
    chosen = sorted(by_person.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:people]
    ds = open_dataset(candidates)
    try:
        size = ds.manifest.image.height or 128
        blank = np.full((size + 12, size + 12, 3), 255, np.uint8)
        tiles = []
        for _, faces in chosen:
            line = []
            for r in faces[:per_person]:
                img = ds[r["index"]].image
                line.append(cv2.copyMakeBorder(np.ascontiguousarray(img), 6, 6, 6, 6, cv2.BORDER_CONSTANT,
                                               value=STATUS_COLOURS[r["status"]]))
            tiles += line + [blank] * (per_person - len(line))
        write_png(path, contact_sheet(tiles, cols=per_person, cell=72) if tiles else blank)
    finally:
        ds.close()
