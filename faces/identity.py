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
import itertools
import logging
import os
import shutil
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shards import ShardWriter, is_complete, open_dataset
from wikifaces.core.errors import MissingInput
from wikifaces.core.executor import Executor, fan_out
from wikifaces.core.files import atomic_open, recover_swap, swap_dir
from wikifaces.core.identity import config_hash, stage_key
from wikifaces.core.mapped import MappedRows
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import BytesColumn, Journal, jsonl_line, read_jsonl
from wikifaces.core.version import code_version

from .config import IdentityConfig

log = logging.getLogger("wikifaces.faces")

CHECKED_DIR = "checked"
IDENTITY_FILE = "identity.jsonl"
JOURNAL_FILE = "descriptors.jsonl"  # every face's descriptor, appended as computed: kept across runs
DESCRIPTORS_FILE = "descriptors.npy"
WORK_FILE = "descriptors.work.npy"  # every candidate's descriptor while the stage runs
SHEET_FILE = "identity-people.png"
# borders of the people sheet (RGB): what the check said about each face
STATUS_COLOURS = {"verified": (46, 160, 67), "identity_unchecked": (150, 150, 150), "other_person": (215, 40, 40),
                  "ambiguous_identity": (240, 150, 20)}
ANCHOR_ROUTES = ("lead", "p18")  # the person's own portrait: level 2
DEPICTS_ROUTES = ("depicts",)  # Commons' structured data says the file depicts them: level 1

# A face's identity status for one person: a closed set.
IdentityStatus = Literal["verified", "identity_unchecked", "other_person", "ambiguous_identity"]
KEPT: tuple[IdentityStatus, ...] = ("verified", "identity_unchecked")


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
def describe_batch(part: tuple[str, Sequence[int]], margin: float) -> list[tuple[str, str]]:
    """(face key, descriptor as base64 float32) for the records `part` names in the candidate shards."""
    import cv2

    from .judge import FaceJudge

    cv2.setNumThreads(1)  # the batches are the parallelism
    path, indices = part[0], [int(i) for i in part[1]]
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


class FaceTable:
    """The candidate faces as the check reads them, in columns: keys and source images as bytes
    arrays, people interned, (person, face) pairs as int32 arrays: ~0.15 kB a face, where dicts of
    metadata, a key index and route sets took ~1.2 kB (a million people's faces: a few hundred MB,
    not gigabytes)."""

    def __init__(self, metas: Iterable[dict[str, Any]]) -> None:
        keys, sources = BytesColumn(), BytesColumn()
        self.person_index: dict[str, int] = {}
        pair_person, pair_face = array("i"), array("i")
        for i, m in enumerate(metas):
            keys.add(m["key"])
            sources.add(m["source_sha256"])
            for pid in dict.fromkeys(m.get("person_ids") or [m["person_id"]]):
                pair_person.append(self.person_index.setdefault(pid, len(self.person_index)))
                pair_face.append(i)
        self.keys, self.sources = keys.array(), sources.array()
        self.people = list(self.person_index)
        self.pair_person = np.frombuffer(pair_person, np.int32) if pair_person else np.empty(0, np.int32)
        self.pair_face = np.frombuffer(pair_face, np.int32) if pair_face else np.empty(0, np.int32)
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted = self.keys[self._order]

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, key: str) -> int | None:
        """The index of the face with this key, or None."""
        b = key.encode()
        j = int(np.searchsorted(self._sorted, b))
        return int(self._order[j]) if j < len(self._sorted) and self._sorted[j] == b else None

    def key(self, i: int) -> str:
        return self.keys[i].decode()

    def source(self, i: int) -> str:
        return self.sources[i].decode()

    def groups(self) -> Iterator[tuple[int, np.ndarray]]:
        """(person, their pairs' positions) per person in order of first appearance, each person's
        faces in record order."""
        order = np.argsort(self.pair_person, kind="stable")
        people = self.pair_person[order]
        cuts = np.flatnonzero(np.diff(people)) + 1
        for span in np.split(order, cuts) if len(order) else []:
            yield int(self.pair_person[span[0]]), span

    def anchor_levels(self, images_path: Path) -> np.ndarray:
        """Per (person, face) pair: `anchor_level` of every route by which the person reached the
        face's image (the images table's ok rows; the level of a union of routes is the highest)."""
        keys, levels = BytesColumn(), array("b")
        for r in read_jsonl(images_path):
            if r.get("status") == "ok" and r.get("sha256") and (p := self.person_index.get(r["person_id"])) is not None:
                keys.add(f"{p:08x}{r['sha256']}")
                levels.append(anchor_level(set(r.get("routes") or ["lead"])))
        out = np.zeros(len(self.pair_person), np.int8)
        known = keys.array()
        if not len(known):
            return out
        order = np.argsort(known, kind="stable")
        known, level = known[order], np.frombuffer(levels, np.int8)[order]
        starts = np.flatnonzero(np.r_[True, known[1:] != known[:-1]])
        known, best = known[starts], np.maximum.reduceat(level, starts)
        step = 4096
        for a in range(0, len(out), step):
            q = np.array([b"%08x" % p + s for p, s in zip(self.pair_person[a : a + step].tolist(),
                                                           self.sources[self.pair_face[a : a + step]].tolist(),
                                                           strict=True)], dtype="S")
            j = np.minimum(np.searchsorted(known, q), len(known) - 1)
            out[a : a + len(q)] = np.where(known[j] == q, best[j], 0)
        return out


def person_verdicts(config: IdentityConfig, table: FaceTable, descriptors: np.ndarray | MappedRows, levels: np.ndarray
                    ) -> Iterator[dict[str, Any]]:
    """One row per (person, face), person after person: every person whose images hold the face.
    `descriptors` row i is record i's; `levels` the pairs' anchor levels (`FaceTable.anchor_levels`)."""
    for p, pairs in table.groups():
        pid = table.people[p]
        idx = table.pair_face[pairs].tolist()
        faces = [Face(table.key(i), table.source(i), descriptors[i], int(lv))
                 for i, lv in zip(idx, levels[pairs].tolist(), strict=True)]
        for i, f, v in zip(idx, faces, check_person(faces, config), strict=True):
            yield {"person_id": pid, "key": f.key, "index": i, "source_sha256": f.source, "anchor": f.anchor,
                   "status": v.status, "distance": None if v.distance is None else round(v.distance, 4),
                   "reference": v.reference, "reason": v.reason}


class _Choice:
    """Per face, the row it is kept by (verified before unchecked, then the nearest; the first of
    equals) and every person it is kept for, in columns: what the checked set is written from."""

    def __init__(self, n: int) -> None:
        self.kept = np.zeros(n, np.int32)  # people the face is kept for
        self.rank = np.zeros(n, np.int8)
        self.order_distance = np.zeros(n, np.float64)  # distance, 0 for none (the order of choice)
        self.person = np.zeros(n, np.int32)
        self.first = np.zeros(n, np.int32)
        self.distance = np.full(n, np.nan)
        self.reference = np.zeros(n, np.int8)  # into self.references
        self.references: list[str | None] = [None]
        self.more: dict[int, list[int]] = {}  # faces kept for several people: all of them

    def add(self, i: int, person: int, row: dict[str, Any]) -> None:
        rank, dist = KEPT.index(row["status"]), row["distance"] or 0.0
        if self.kept[i] == 0:
            self.first[i] = person
        else:
            self.more.setdefault(i, [int(self.first[i])]).append(person)
        if self.kept[i] == 0 or (rank, dist) < (self.rank[i], self.order_distance[i]):
            if row["reference"] not in self.references:
                self.references.append(row["reference"])
            self.rank[i], self.order_distance[i], self.person[i] = rank, dist, person
            self.distance[i] = np.nan if row["distance"] is None else row["distance"]
            self.reference[i] = self.references.index(row["reference"])
        self.kept[i] += 1

    def identity(self, i: int, model: str) -> dict[str, Any]:
        d = float(self.distance[i])
        return {"status": KEPT[self.rank[i]], "distance": None if np.isnan(d) else d,
                "reference": self.references[self.reference[i]], "model": model}

    def people(self, i: int) -> list[int]:
        return self.more.get(i) or [int(self.first[i])]


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
    # Per face only what the check reads, in columns (its full metadata is read again for the
    # faces written).
    table = FaceTable(ds.iter_meta())
    margin = float(ds.manifest.provenance.parameters.get("margin", 0.25))
    ds.close()
    # on disk, paged in as the check reads them and let go every 4,096 rows touched: 0.5 kB a face
    # (a GB for two million) is neither held nor counted in the stage's RSS
    work = data.faces / WORK_FILE
    descriptors = MappedRows(work, len(table), 128, np.float32)
    described = np.zeros(len(table), bool)
    journal = _journal(data)

    def record(result: list[tuple[str, str]]) -> None:
        for key, b64 in result:
            journal.append({"key": key, "d": b64})
            i = table.find(key)
            if i is None:
                raise RuntimeError(f"a descriptor came back for face {key}, which the candidates lack")
            descriptors[i], described[i] = _decode(b64), True

    for key, row in journal.rows():  # streamed: the journal holds every face ever described
        if (i := table.find(key)) is not None:
            descriptors[i], described[i] = _decode(row["d"]), True
    todo = np.flatnonzero(~described)  # batches are slices of it (8 bytes a face, not a Python int each)
    parts = [(str(candidates), todo[i : i + config.batch_size]) for i in range(0, len(todo), config.batch_size)]
    try:
        fan_out(executor, describe_batch, parts, margin, on_result=record, label="describing faces",
                progress=progress, workers=config.workers)
    finally:
        journal.close()
    counts = _decide(data, config, table, descriptors, table.anchor_levels(images_path), descriptor_version(),
                     described_now=len(todo))
    work.unlink()  # unmapped when the stage returns (Linux keeps a mapped file's pages until then)
    return IdentitySummary(counts["people"], len(table), counts["kept"], counts["statuses"],
                           data.faces / IDENTITY_FILE, counts)


def anchor_level(routes: set[str]) -> int:
    """How much a face's routes say about whose it is: 2 the person's portrait, 1 depicts, 0 neither."""
    return 2 if routes & set(ANCHOR_ROUTES) else 1 if routes & set(DEPICTS_ROUTES) else 0


def _decide(data: DataRoot, config: IdentityConfig, table: FaceTable, descriptors: np.ndarray | MappedRows,
            levels: np.ndarray, model: str, described_now: int, sheet_people: int = 8) -> dict[str, Any]:
    """The verdicts, person after person, into identity.jsonl as they are made (tallied, and the
    choice of each kept face noted in columns); then the checked set and the people sheet."""
    keep = set(KEPT if config.keep_unchecked else ("verified",))
    choice = _Choice(len(table))
    statuses: Counter[str] = Counter()
    references: Counter[str] = Counter()
    faces_per_person: Counter[int] = Counter()
    verified_people = 0
    sheet = _sheet_people(table, sheet_people)
    sheet_rows: list[dict[str, Any]] = []
    by_person = itertools.groupby(person_verdicts(config, table, descriptors, levels), key=lambda r: r["person_id"])
    with atomic_open(data.faces / IDENTITY_FILE, "w") as out:
        for pid, rows in by_person:
            p, kept, verified = table.person_index[pid], 0, False
            for r in rows:
                out.write(jsonl_line(r))
                statuses[r["status"]] += 1
                if r["reference"]:
                    references[r["reference"]] += 1
                verified |= r["status"] == "verified"
                if r["status"] in keep:
                    choice.add(r["index"], p, r)
                    kept += 1
                if p in sheet:
                    sheet_rows.append(r)
            verified_people += verified
            if kept:
                faces_per_person[kept] += 1
    kept_faces = _write_checked(data, config, table, choice, descriptors, statuses, model)
    people_sheet(data.faces / "shards", sheet_rows, data.faces / SHEET_FILE, people=sheet_people)
    return {"people": len(table.people), "faces": len(table), "kept": kept_faces, "statuses": dict(statuses),
            "described_now": described_now, "model": model, "people_verified": verified_people,
            "faces_per_person": dict(sorted(faces_per_person.items())), "references": dict(references)}


def _sheet_people(table: FaceTable, n: int) -> set[int]:
    """The people the sheet shows: those with the most faces (then by id)."""
    counts = np.bincount(table.pair_person, minlength=len(table.people))
    if len(counts) > n:
        floor = np.partition(counts, len(counts) - n)[len(counts) - n]
        candidates = np.flatnonzero(counts >= floor)
    else:
        candidates = np.arange(len(counts))
    ranked = sorted(candidates.tolist(), key=lambda p: (-int(counts[p]), table.people[p]))
    return set(ranked[:n])


def _write_checked(data: DataRoot, config: IdentityConfig, table: FaceTable, choice: _Choice,
                   descriptors: np.ndarray | MappedRows, statuses: Counter[str], model: str) -> int:
    """The checked candidate set: each kept face once, filed under the person it is verified for
    (or, unchecked, the first person it came with); `person_ids` lists every person it is kept for."""
    out = data.faces / CHECKED_DIR
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "shards.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    src = open_dataset(data.faces / "shards")
    m = src.manifest
    order = np.flatnonzero(choice.kept > 0)
    size = (m.image.height, m.image.width) if m.image.height and m.image.width else None
    # each candidate once, from a dataset whose writer checked its keys: no need to hold them all again
    with ShardWriter(tmp, name="faces-checked", image_size=size, encoding=m.image.encoding,
                     parameters={**m.provenance.parameters, "identity": config.model_dump(mode="json"),
                                 "descriptor": model},
                     code_version=code_version(), check_keys=False) as w:
        licences: Counter[str] = Counter()
        for i, encoded, stored in src.iter_at(order.tolist()):  # unmapped as it goes: ~30 MB, not the candidates' GBs
            meta = {**stored, "person_id": table.people[choice.person[i]],
                    "person_ids": [table.people[p] for p in choice.people(i)], "identity": choice.identity(i, model)}
            w.add_encoded(encoded, meta)
            licences[meta.get("licence") or "unknown"] += 1
        w.summary["licences"] = dict(licences)
        w.summary["identity"] = dict(statuses)
    src.close()
    with atomic_open(out / DESCRIPTORS_FILE, "wb") as fh:  # row i: record i of the checked set; in pieces
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(descriptors.dtype),
                                                  "fortran_order": False, "shape": (len(order), descriptors.shape[1])})
        for a in range(0, len(order), 4096):
            fh.write(np.ascontiguousarray(descriptors[order[a : a + 4096]]).tobytes())
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
