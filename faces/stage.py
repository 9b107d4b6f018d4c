"""Stage `detect`: faces found, checked and cropped from every downloaded portrait.

Each source image is processed once (people sharing a picture share its faces), in parallel
processes with one detector each; results go to a journal as they finish, so a killed run
resumes per source image. At the end the candidate crops are written as shards in a
deterministic order, with `faces.jsonl` holding one row per detection (kept or not) and one
per image in which nothing usable was found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from shards import ShardWriter, is_complete, open_dataset
from shards.format import encode_image
from wikifaces.core.errors import MissingInput
from wikifaces.core.executor import Executor, fan_out
from wikifaces.core.files import atomic_write_bytes, atomic_write_text, recover_swap, swap_dir
from wikifaces.core.identity import results_hash, stage_key
from wikifaces.core.imaging import ImageProblem, decode_rgb
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import BytesColumn, Journal, RowIndex, read_jsonl, write_jsonl
from wikifaces.core.version import code_version

from .config import DetectConfig
from .crop import crop_face
from .detect import FaceDetector, detector_info
from .verify import MtcnnVerifier, Verifier, make_verifier

log = logging.getLogger("wikifaces.faces")

FACES_FILE = "faces.jsonl"
JOURNAL_FILE = "faces.journal.jsonl"
KEY_FILE = "faces.key"  # the results hash the table was made under
SHARDS_DIR = "shards"
REJECTED_DIR = "rejected"
WORK_DIR = "work"
REJECTED_SAMPLES = 256
RESULTS_BATCH = 1000  # sources whose results are read back at a time when writing the table
CARRIED = ("title", "file", "url", "licence", "licence_url", "artist", "credit", "attribution_required")


# A detection's (or an image's) status in faces.jsonl: a closed set.
FaceStatus = Literal["ok", "unverified", "too_small", "not_single", "no_face", "no_usable_face", "missing_source",
                     "too_large", "corrupt", "not_image"]


@dataclass
class DetectSummary:
    images: int
    faces: int
    statuses: dict[FaceStatus, int]
    output: Path
    counts: dict[str, Any] = field(default_factory=dict)


_LANDMARKER: list[MtcnnVerifier] = []


def landmarker() -> MtcnnVerifier:
    """O-Net for landmarks when the verifier is another one (loaded once a process)."""
    if not _LANDMARKER:
        _LANDMARKER.append(MtcnnVerifier())
    return _LANDMARKER[0]


# -- the per-image work ------------------------------------------------------------------------------------------
def process_image(path: str, sha256: str, config: DetectConfig, detector: FaceDetector | None = None,
                  verifier: Verifier | None = None) -> dict[str, Any]:
    """Detect, verify, rank and crop the faces of one stored image. Returns a result with one
    entry per detection; crops are returned as encoded bytes (kept and rejected alike)."""
    detector = detector or FaceDetector(config)
    verifier = verifier or make_verifier(config.verify)
    result: dict[str, Any] = {"source_sha256": sha256, "status": "ok", "reason": "", "width": None,
                              "height": None, "faces": []}
    try:
        rgb = decode_rgb(Path(path).read_bytes(), config.max_pixels)
    except FileNotFoundError:
        result.update(status="missing_source", reason="the stored image is gone (taken down?)")
        return result
    except ImageProblem as exc:
        result.update(status=exc.status, reason=exc.reason)
        return result
    result.update(height=int(rgb.shape[0]), width=int(rgb.shape[1]))
    dets = detector.detect(rgb)
    points: Any = [None] * len(dets)
    if isinstance(verifier, MtcnnVerifier):  # one O-Net pass: the score and the landmarks
        scores, points = verifier.scores_and_landmarks(rgb, dets)
    else:
        scores = verifier.scores(rgb, dets) if config.verify != "none" else [None] * len(dets)
        if config.align == "landmarks":
            points = landmarker().scores_and_landmarks(rgb, dets)[1]
    entries = []
    for det, score, pts in zip(dets, scores, points, strict=True):
        ok = score is None or score >= config.verify_threshold
        entries.append({"det": det, "score": score, "verified": ok, "points": pts})
    verified = sorted((e for e in entries if e["verified"]), key=lambda e: (-e["det"].side, e["det"].box))
    rejected = sorted((e for e in entries if not e["verified"]), key=lambda e: (-e["det"].side, e["det"].box))
    sides = [e["det"].side for e in verified]
    second = round(sides[1] / sides[0], 3) if len(sides) > 1 else 0.0
    for rank, e in enumerate(verified + rejected):
        det = e["det"]
        face: dict[str, Any] = {
            "rank": rank, "box": list(det.box), "neighbors": det.neighbors, "verify_score": e["score"],
            "faces_in_image": len(verified), "second_face_ratio": second,
        }
        if not e["verified"]:
            face.update(status="unverified",
                        reason=f"{config.verify} score {e['score']:.2f} < {config.verify_threshold}")
        elif det.side < config.min_face:
            face.update(status="too_small", reason=f"face of {det.side} px < min_face {config.min_face}")
        elif config.single_face_only and len(verified) > 1:
            face.update(status="not_single", reason=f"{len(verified)} faces in the image; single_face_only")
        else:
            face.update(status="ok", reason="")
        crop, transform = crop_face(rgb, det.box, config, e["points"] if config.align == "landmarks" else None)
        face["crop"] = transform
        face["crop_bytes"] = encode_image(crop, config.encoding)
        result["faces"].append(face)
    if not verified:
        result.update(status="no_face", reason="no face found" if not dets else
                      f"{len(dets)} detection(s), none confirmed by {config.verify}")
    elif not any(f["status"] == "ok" for f in result["faces"]):
        result.update(status="no_usable_face", reason="faces found, none kept (see the face rows)")
    return result


# -- the stage ------------------------------------------------------------------------------------------------
def item_hash(config: DetectConfig, root: DataRoot) -> str:
    """The hash of what decides a face's result: not how many workers, nor how many images."""
    return results_hash(config.model_copy(update={"limit": None}), root.root)


def _journal(root: DataRoot, config: DetectConfig) -> Journal:
    return Journal(root.faces / JOURNAL_FILE, key=lambda r: r["source_sha256"],
                   version=stage_key(item_hash(config, root)))


def reset_detection(root: str | os.PathLike[str] | DataRoot | None = None) -> None:
    """Forget every earlier result (journal, and the last run's table as a source of results):
    the next run detects every image anew. A crash after this resumes from the new journal."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    for name in (JOURNAL_FILE, KEY_FILE):
        (data.faces / name).unlink(missing_ok=True)


def face_key(sha256: str, rank: int) -> str:
    return f"{sha256[:24]}-{rank:02d}"


class Shas(Sequence[str]):
    """Source sha256s (hex) in a bytes array, 64 bytes each: a plan of millions of images holds
    no Python string per image."""

    def __init__(self, hexes: np.ndarray) -> None:
        self.array = hexes

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.array[i].decode()

    def __iter__(self) -> Iterator[str]:
        return (b.decode() for b in self.array.tolist())


class Tasks(Sequence[tuple[str, str]]):
    """(stored file, sha256) of the sources still to detect, made when asked for from their
    positions among the plan's sources."""

    def __init__(self, shas: Shas, positions: np.ndarray, store: Path) -> None:
        self.shas, self.positions, self.store = shas, positions, store

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[str, str]:  # type: ignore[override]
        s = self.shas[int(self.positions[i])]
        return str(self.store / s[:2] / s[2:4] / s), s


class Batches(Sequence[list[Any]]):
    """Consecutive slices of `size` items, each made when asked for (fan-out parts)."""

    def __init__(self, items: Sequence[Any], size: int) -> None:
        self.items, self.size = items, size

    def __len__(self) -> int:
        return -(-len(self.items) // self.size)

    def __getitem__(self, k: int) -> list[Any]:  # type: ignore[override]
        if not 0 <= k < len(self):
            raise IndexError(k)
        return [self.items[i] for i in range(k * self.size, min((k + 1) * self.size, len(self.items)))]


@dataclass
class DetectPlan:
    """What a detection run has to do: the sources in order, and those not yet done."""

    config: DetectConfig
    root: DataRoot
    shared: dict[str, list[str]]  # sha256 -> the people whose image rows use it, for the sources of several
    shas: Shas
    todo: Tasks
    chash: str

    @property
    def out_dir(self) -> Path:
        return self.root.faces

    @property
    def work(self) -> Path:
        return self.root.faces / WORK_DIR


def plan_detection(config: DetectConfig, root: str | os.PathLike[str] | DataRoot | None = None) -> DetectPlan:
    """Read the images table and the journal: which source images still need detecting. The
    sources are a bytes array in order of first use; who uses each is kept only for the sources
    that several image rows use (the rest name their person in their one row): ~70 bytes an image
    and ~0.3 kB a reused one, where dicts and task tuples took ~0.5 kB an image."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    images_path = data.raw_wikipedia / "images.jsonl"
    if not images_path.exists():
        raise MissingInput(f"{images_path} does not exist: run the images stage first")
    out_dir = data.faces
    (out_dir / WORK_DIR).mkdir(parents=True, exist_ok=True)
    recover_swap(out_dir / SHARDS_DIR)
    recover_swap(out_dir / REJECTED_DIR)
    shas, shared = _plan_sources(images_path, config.limit)
    chash = item_hash(config, data)
    done = _results(data, config, chash).has(shas)
    return DetectPlan(config, data, shared, shas, Tasks(shas, np.flatnonzero(~done), data.image_store), chash)


def _plan_sources(images_path: Path, limit: int | None) -> tuple[Shas, dict[str, list[str]]]:
    """(the sources in order of first use, who uses each source that several rows use), in two
    passes over the images table: the first keeps 8 bytes a row (the sha's hash) to find where each
    source is first used and which are used again; the second keeps those sources' sha256s and the
    people of the reused ones. A hash shared by two different sha256s is caught in the second pass."""
    hashes = array("q", (hash(row["sha256"]) for row in read_jsonl(images_path) if _is_source(row)))
    rows = len(hashes)
    unique, first, uses = np.unique(np.frombuffer(hashes, np.int64) if rows else np.empty(0, np.int64),
                                    return_index=True, return_counts=True)
    firsts = np.sort(first)  # the source rows that are a source's first use
    again = set(unique[uses > 1].tolist())
    del hashes, unique, first, uses
    column = BytesColumn()
    by_hash: dict[int, str] = {}  # the sha256 first seen with each reused hash
    shared: dict[str, list[str]] = {}
    collided: dict[str, int] = {}  # sha256 -> first row, of a source whose hash an earlier source has
    j = k = 0
    for row in read_jsonl(images_path):
        if not _is_source(row):
            continue
        sha = row["sha256"]
        if k < len(firsts) and j == firsts[k]:
            column.add(sha)
            k += 1
        if (hs := hash(sha)) in again:
            if by_hash.setdefault(hs, sha) != sha:
                collided.setdefault(sha, j)
            ids = shared.setdefault(sha, [])
            if row["person_id"] not in ids:
                ids.append(row["person_id"])
        j += 1
    if j != rows:
        raise RuntimeError("the images table changed while detection was planned: run detect again")
    shas = column.array()
    if collided:
        shas = np.insert(shas, np.searchsorted(firsts, list(collided.values())),
                         np.array([sha.encode() for sha in collided], "S64"))
    return Shas(shas[:limit] if limit else shas), shared


def _is_source(row: dict[str, Any]) -> bool:
    """Whether an images-table row is a downloaded image to detect faces in (planning and writing
    the table must agree on it)."""
    return row.get("status") == "ok" and bool(row.get("sha256"))


def detect_batch(tasks: list[tuple[str, str]], config: DetectConfig, work: str | os.PathLike[str]
                 ) -> list[dict[str, Any]]:
    """Detect faces in a batch of stored images (one detector for the batch); crops are written
    to the shared `work` folder, and the results (small rows) are returned. A unit of fan-out."""
    cv2.setNumThreads(1)  # the batches are the parallelism
    detector, verifier = FaceDetector(config), make_verifier(config.verify)
    return [_save_crops(process_image(path, sha, config, detector, verifier), Path(work), config.encoding)
            for path, sha in tasks]


def _save_crops(result: dict[str, Any], work: Path, encoding: str) -> dict[str, Any]:
    for face in result["faces"]:
        key = face_key(result["source_sha256"], face["rank"])
        atomic_write_bytes(work / f"{key}.{encoding}", face.pop("crop_bytes"))
        face["key"] = key
    return result


def record_results(plan: DetectPlan, results: list[dict[str, Any]]) -> None:
    """Journal finished results (a killed run resumes from them; the table is written from them)."""
    journal_results(plan.root, plan.config, results)


def journal_results(root: DataRoot, config: DetectConfig, results: list[dict[str, Any]]) -> None:
    with _journal(root, config) as journal:
        for result in results:
            journal.append(result)


def finish_detection(plan: DetectPlan) -> DetectSummary:
    """Write the shards and the faces table from every source's result; mark them as made
    under this config (`faces.key`), so a later run with the same one reuses them."""
    config, out_dir = plan.config, plan.out_dir
    statuses: Counter[str] = Counter()
    kept: list[int] = []
    # one pass: each row goes to the shards and to the table as it is made, none is held
    rows = _write_shards(out_dir, _table(plan, statuses), plan.work,
                         previous_dataset=out_dir / SHARDS_DIR, config=config, kept=kept)
    write_jsonl(out_dir / FACES_FILE, rows)
    atomic_write_text(out_dir / KEY_FILE, plan.chash)
    Journal(out_dir / JOURNAL_FILE, key=lambda r: r["source_sha256"]).remove()
    shutil.rmtree(plan.work, ignore_errors=True)
    counts = {"images": len(plan.shas), "faces": kept[0], "statuses": dict(statuses), "processed_now": len(plan.todo)}
    return DetectSummary(len(plan.shas), kept[0], dict(statuses), out_dir / FACES_FILE, counts)


def batches(items: Sequence[Any], size: int) -> Batches:
    return Batches(items, size)


def detect_faces(config: DetectConfig, root: str | os.PathLike[str] | DataRoot | None = None, progress: bool = True,
                 force: bool = False, executor: Executor | None = None) -> DetectSummary:
    """The stage: plan, detect batches of `config.batch_size` images through the executor (local
    processes by default, one detector each), journal each batch as it lands, finish. Resumable
    per source image; `force` detects every image again."""
    if force:
        reset_detection(root)
    plan = plan_detection(config, root)
    fan_out(executor, detect_batch, batches(plan.todo, config.batch_size), config, str(plan.work),
            on_result=lambda results: record_results(plan, results), label="detecting faces", progress=progress,
            workers=config.workers)
    return finish_detection(plan)


def _results(root: DataRoot, config: DetectConfig, chash: str) -> RowIndex:
    """Where each source's result lies, not the results (~1 kB each, gigabytes for millions):
    the faces table of a completed earlier run with the same config, then the journal (whose
    results win)."""
    index = RowIndex()
    out_dir = root.faces
    key = out_dir / KEY_FILE
    if key.exists() and key.read_text() == chash and is_complete(out_dir / SHARDS_DIR):
        index.add(out_dir / FACES_FILE, group=_source)
    journal = _journal(root, config)
    index.add(journal.path, group=_source, keep=journal.current)
    return index


def _source(row: dict[str, Any]) -> str:
    return row["source_sha256"]


def _read_results(index: RowIndex, shas: list[str]) -> dict[str, dict[str, Any]]:
    """The results of `shas`: a journalled one (the last), else one rebuilt from the earlier faces
    table's rows of that source."""
    journalled: dict[str, dict[str, Any]] = {}
    previous: dict[str, dict[str, Any]] = {}
    for row in index.rows(shas):
        if "image_status" not in row:  # a journal row: a whole result
            journalled[row["source_sha256"]] = row
            continue
        r = previous.setdefault(row["source_sha256"], {"source_sha256": row["source_sha256"], "faces": [],
                                                       "status": row["image_status"], "reason": row["image_reason"],
                                                       "width": row["image_width"], "height": row["image_height"]})
        if row.get("rank") is not None:
            r["faces"].append({k: row[k] for k in ("rank", "box", "neighbors", "verify_score", "faces_in_image",
                                                   "second_face_ratio", "status", "reason", "crop", "key")})
    return {**previous, **journalled}


def _table(plan: DetectPlan, statuses: Counter[str]) -> Iterator[dict[str, Any]]:
    """The faces table's rows, one source image after another, counting their statuses. The
    images table is read again for what the rows carry (licence, credit, ...): the sources are in
    the order of their first image rows, so one pass finds each at its first row; their results
    are read back from the journal (and the earlier table) a batch of sources at a time."""
    det = detector_info(plan.config)
    verifier = {"name": plan.config.verify, "threshold": plan.config.verify_threshold}
    index = _results(plan.root, plan.config, plan.chash)
    sources = _source_rows(plan)
    while batch := list(islice(sources, RESULTS_BATCH)):
        results = _read_results(index, [sha for sha, _ in batch])
        for sha, row in batch:
            if sha not in results:
                raise RuntimeError(f"no detection result for source {sha}: run detect again with --force")
            result, ids = results[sha], plan.shared.get(sha) or [row["person_id"]]
            base = {
                "source_sha256": sha, "person_id": ids[0], "person_ids": ids, **{c: row.get(c) for c in CARRIED},
                "image_status": result["status"], "image_reason": result["reason"],
                "image_width": result["width"], "image_height": result["height"],
                "detector": det, "verifier": verifier,
            }
            faces = result["faces"] or [{"key": None, "rank": None, "box": None, "neighbors": None,
                                         "verify_score": None, "faces_in_image": 0, "second_face_ratio": 0.0,
                                         "crop": None, "status": result["status"], "reason": result["reason"]}]
            for face in faces:
                statuses[face["status"]] += 1
                yield {**base, **face}


def _source_rows(plan: DetectPlan) -> Iterator[tuple[str, dict[str, Any]]]:
    """(sha256, first images-table row) of each planned source, in order."""
    shas, k = plan.shas, 0
    for row in read_jsonl(plan.root.raw_wikipedia / "images.jsonl"):
        if k == len(shas):
            return
        if _is_source(row) and row["sha256"] == shas[k]:
            yield shas[k], row
            k += 1
    if k < len(shas):
        raise RuntimeError("the images table changed while faces were detected: run detect again")


def _crop_bytes(key: str, work: Path, encoding: str, old: Any, old_index: dict[str, int]) -> bytes:
    p = work / f"{key}.{encoding}"
    if p.exists():
        return p.read_bytes()
    if old is not None and key in old_index:
        return old.read_bytes(old_index[key])
    raise FileNotFoundError(f"the crop of face {key} is neither in {work} nor in the previous shards")


def _write_shards(out_dir: Path, rows: Iterable[dict[str, Any]], work: Path, previous_dataset: Path,
                  config: DetectConfig, kept: list[int]) -> Iterator[dict[str, Any]]:
    """Write kept crops to shards (and a sample of rejected ones), via a temporary folder swap,
    passing each row on as it is written; the folders are swapped in after the last row, and
    `kept` then holds how many crops the shards hold."""
    old = open_dataset(previous_dataset) if is_complete(previous_dataset) else None
    old_index = {m["key"]: i for i, m in enumerate(old.iter_meta())} if old is not None else {}
    old_rej = out_dir / REJECTED_DIR
    old_r = open_dataset(old_rej) if is_complete(old_rej) else None
    old_r_index = {m["key"]: i for i, m in enumerate(old_r.iter_meta())} if old_r is not None else {}
    size = (config.size, config.size)
    params = config.model_dump(mode="json")
    licences: Counter[str] = Counter()
    count = 0
    tmp, tmp_rej = out_dir / f"{SHARDS_DIR}.tmp", out_dir / f"{REJECTED_DIR}.tmp"
    for t in (tmp, tmp_rej):
        shutil.rmtree(t, ignore_errors=True)
    version = code_version()
    with ShardWriter(tmp, name="faces-candidates", image_size=size, encoding=config.encoding,
                     parameters=params, code_version=version) as w, \
            ShardWriter(tmp_rej, name="faces-rejected", image_size=size, encoding=config.encoding,
                        parameters=params, code_version=version) as wr:
        for row in rows:
            yield row
            if row["key"] is None:
                continue
            meta = {k: row[k] for k in ("key", "person_id", "person_ids", "title", "source_sha256", "rank", "box",
                                        "faces_in_image", "second_face_ratio", "verify_score", "licence",
                                        "licence_url", "artist", "credit", "file", "url", "status", "reason")}
            meta["crop"] = row["crop"]
            if row["status"] == "ok":
                w.add_encoded(_crop_bytes(row["key"], work, config.encoding, old, old_index), meta)
                licences[row["licence"] or "unknown"] += 1
                count += 1
            elif wr.count < REJECTED_SAMPLES:
                with contextlib.suppress(FileNotFoundError):
                    wr.add_encoded(_crop_bytes(row["key"], work, config.encoding, old_r, old_r_index), meta)
        w.summary["licences"] = dict(licences)
    for ds in (old, old_r):
        if ds is not None:
            ds.close()
    swap_dir(tmp, out_dir / SHARDS_DIR)
    swap_dir(tmp_rej, out_dir / REJECTED_DIR)
    kept.append(count)


def read_face_crops(root: str | os.PathLike[str] | None = None) -> Any:
    """The candidate face dataset of a data root (a shards Dataset)."""
    return open_dataset(DataRoot.resolve(root).faces / SHARDS_DIR)

