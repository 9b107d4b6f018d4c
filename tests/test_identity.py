"""Several candidate files per person, and each face checked to be that person."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from faces.config import IdentityConfig
from faces.identity import Face, check_identities, check_person
from scraping.config import ImagesConfig, NamesConfig
from scraping.images import fetch_images
from scraping.names import collect_names
from shards import open_dataset
from wikifaces.core.tables import read_jsonl
from wikifaces.fixtures.standin import build_corpus

from .conftest import PIPELINE_CORPUS, REPO
from .conftest import standin_http as http


# -- the rule, on descriptors with known distances ----------------------------------------------------------------
def _at(*coords: float) -> np.ndarray:
    v = np.zeros(128, np.float32)
    v[: len(coords)] = coords
    return v


def _face(key: str, source: str, x: float, y: float = 0.0, anchor: int = 0) -> Face:
    return Face(key, source, _at(x, y), anchor)


def _statuses(faces: list[Face], **kw: float) -> list[str]:
    return [v.status for v in check_person(faces, IdentityConfig(**kw))]


def test_the_lead_image_is_the_reference_when_it_holds_one_face():
    faces = [_face("lead", "L", 0.0, anchor=2), _face("a", "A", 0.3), _face("b", "B", 0.45),
             _face("c", "C", 2.0), _face("d", "D", 2.1)]  # two far faces agree with each other, not with the lead
    verdicts = check_person(faces, IdentityConfig(threshold=0.5))
    assert [v.status for v in verdicts] == ["verified", "verified", "verified", "other_person", "other_person"]
    assert verdicts[3].distance == pytest.approx(2.0) and "2.00" in verdicts[3].reason
    assert {v.reference for v in verdicts} == {"anchor"}


def test_a_lead_group_photo_is_no_reference_the_largest_tight_group_is():
    faces = [_face("g1", "G", 0.0, anchor=2), _face("g2", "G", 3.0, anchor=2),  # the lead: two faces
             _face("a", "A", 3.1), _face("b", "B", 3.2), _face("c", "C", 9.0)]
    assert _statuses(faces) == ["other_person", "verified", "verified", "verified", "other_person"]


def test_depicts_files_come_before_the_group():
    faces = [_face("x1", "X", 5.0), _face("x2", "Y", 5.1), _face("x3", "Z", 5.2),  # three of someone else
             _face("d", "D", 0.0, anchor=1), _face("e", "E", 0.2)]
    verdicts = check_person(faces, IdentityConfig())
    assert [v.status for v in verdicts] == ["other_person"] * 3 + ["verified"] * 2
    assert verdicts[0].reference == "depicts"


def test_disagreeing_faces_without_a_reference_are_ambiguous():
    faces = [_face("a", "A", 0.0), _face("b", "B", 3.0)]
    assert _statuses(faces) == ["ambiguous_identity", "ambiguous_identity"]
    tie = [_face("a", "A", 0.0), _face("b", "B", 0.1), _face("c", "C", 3.0), _face("d", "D", 3.1)]
    assert set(_statuses(tie)) == {"ambiguous_identity"}


def test_one_face_is_unchecked_unless_only_the_category_offers_it():
    assert _statuses([_face("a", "A", 0.0, anchor=2)]) == ["identity_unchecked"]
    assert _statuses([_face("a", "A", 0.0, anchor=1)]) == ["identity_unchecked"]
    assert _statuses([_face("a", "A", 0.0, anchor=0)]) == ["ambiguous_identity"]


def test_a_photograph_shows_the_person_once():
    faces = [_face("lead", "L", 0.0, anchor=2), _face("g1", "G", 0.3), _face("g2", "G", 0.2)]
    verdicts = check_person(faces, IdentityConfig())
    assert [v.status for v in verdicts] == ["verified", "other_person", "verified"]
    assert "same image" in verdicts[1].reason


# -- candidates from every route, merged --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus():
    return build_corpus(36, all_photos=True)


def test_candidates_come_from_every_route_one_row_per_file(tmp_path, server, corpus):
    cfg = http(server)
    collect_names(NamesConfig(categories=("Stand-in everyone",), http=cfg), tmp_path)
    server.clear_log()
    s = fetch_images(ImagesConfig(http=cfg, category_depth=1), tmp_path, progress=False)
    rows = list(read_jsonl(tmp_path / "raw/wikipedia/images.jsonl"))
    keys = [(r["person_id"], r["file"]) for r in rows]
    assert len(keys) == len(set(keys))  # a file reached by several routes is one row
    by_person = defaultdict(dict)
    for r in rows:
        by_person[r["person_id"]][r["file"]] = r
    checked = 0
    for p in corpus.people:
        if not p.commons_category or "/" in p.title:
            continue
        cat = corpus.commons_categories[f"Category:{p.commons_category}"]
        files = [m for m in cat if not m.startswith("Category:")]
        got = by_person[p.qid]
        assert set(files) <= set(got), p.title  # every file of the category (the cap is 20)
        for name in files:
            assert "category" in got[name]["routes"]
        for name in corpus.depicts[p.qid]:
            assert "depicts" in got[name]["routes"]
        if p.p18 and p.p18 in files:  # the lead image is in its own category: one row, three routes
            assert got[p.p18]["routes"] == ["lead", "p18", "category"] + (["depicts"] if p.p18 in
                                                                          corpus.depicts[p.qid] else [])
        checked += 1
    assert checked >= 8
    # the subcategory (and its cycle back) was followed once, at depth 1
    sub = next(c for c in corpus.commons_categories if c.endswith(" in 2010"))
    first = sub.removesuffix(" in 2010")
    listed = Counter(e.params.get("gcmtitle") for e in server.log if e.params.get("generator") == "categorymembers")
    assert listed[sub] == 1 and listed[first] == 1
    # requests: listing and imageinfo together, two per person at most, plus batched look-ups
    api = [e for e in server.log if e.endpoint in ("api", "commons", "wikidata")]
    with_category = sum(1 for p in corpus.people if p.commons_category)
    assert len(api) <= len(corpus.people) + 2 * with_category + 6
    assert all(e.params.get("prop") == "imageinfo" for e in api if e.params.get("generator"))
    assert s.counts["routes"]["depicts"] > 0 and s.counts["images_per_person"]


def test_the_cap_keeps_the_routes_order(tmp_path, server, corpus):
    cfg = http(server)
    collect_names(NamesConfig(categories=("Stand-in everyone",), http=cfg), tmp_path)
    fetch_images(ImagesConfig(http=cfg, max_images_per_person=2), tmp_path, progress=False)
    rows = list(read_jsonl(tmp_path / "raw/wikipedia/images.jsonl"))
    per_person = Counter(r["person_id"] for r in rows)
    assert max(per_person.values()) == 2
    for r in rows:
        if r["person_id"] == corpus.people[0].qid and corpus.people[0].image:
            assert r["file"] == corpus.people[0].image or "lead" not in r["routes"]
    one = fetch_images(ImagesConfig(http=cfg, max_images_per_person=1, routes=("category", "lead")), tmp_path,
                       progress=False)
    assert one.counts["routes"].get("category", 0) == 0  # routes run in the fixed order: lead first


# -- the stage, on the pipeline's stand-in build --------------------------------------------------------------------
def _truth(root):
    """(person, source sha256) -> what the stand-in put in that file."""
    corpus = build_corpus(*PIPELINE_CORPUS)
    files = {}
    for r in read_jsonl(root.raw_wikipedia / "images.jsonl"):
        if r["sha256"]:
            files.setdefault((r["person_id"], r["sha256"]), corpus.files[r["file"]])
    return files


def test_identity_statuses_on_a_stand_in_build(pipeline_root):
    rows = list(read_jsonl(pipeline_root.faces / "identity.jsonl"))
    statuses = Counter(r["status"] for r in rows)
    assert statuses["verified"] >= 10 and statuses["other_person"] >= 3
    files = _truth(pipeline_root)
    kept_kinds = Counter(files[(r["person_id"], r["source_sha256"])].kind for r in rows
                         if r["status"] in ("verified", "identity_unchecked"))
    # another person's photo and group photos are turned away; the person's own shots are kept
    assert kept_kinds["same"] >= 5
    assert kept_kinds["other_person"] + kept_kinds["group"] <= 0.05 * sum(kept_kinds.values())
    turned = Counter(files[(r["person_id"], r["source_sha256"])].kind for r in rows if r["status"] == "other_person")
    assert turned["other_person"] + turned["group"] >= 3
    # the checked set: each kept face once, with its verdict, the descriptor model, and the people it is kept for
    ds = open_dataset(pipeline_root.faces / "checked/shards")
    metas = list(ds.iter_meta())
    kept_keys = {r["key"] for r in rows if r["status"] in ("verified", "identity_unchecked")}
    assert len(metas) == len({m["key"] for m in metas}) and {m["key"] for m in metas} == kept_keys
    for m in metas:
        assert m["identity"]["status"] in ("verified", "identity_unchecked") and "dlib" in m["identity"]["model"]
        assert m["person_id"] in m["person_ids"]
    assert np.load(pipeline_root.faces / "checked/descriptors.npy").shape == (len(metas), 128)
    assert len({m["person_id"] for m in metas if m["identity"]["status"] == "verified"}) >= 3
    assert (pipeline_root.faces / "identity-people.png").stat().st_size > 1000


def test_a_new_threshold_redecides_without_describing_again(pipeline_root, tmp_path):
    from wikifaces.core.paths import DataRoot
    from wikifaces.pipeline import run_stage

    root = _copy_faces(pipeline_root, tmp_path)
    rows = list(read_jsonl(pipeline_root.faces / "identity.jsonl"))
    near = min(r["distance"] for r in rows if r["status"] == "verified" and r["distance"])
    strict = run_stage("identity", IdentityConfig(threshold=near / 2, group_distance=near / 2), root, progress=False)
    assert strict.counts["described_now"] == 0
    default = json.loads((pipeline_root.root / "receipts/identity.json").read_text())["counts"]
    assert strict.counts["statuses"]["verified"] < default["statuses"]["verified"]
    assert DataRoot(root).faces.joinpath("identity.jsonl").exists()


def _copy_faces(src_root, tmp_path):
    root = tmp_path / "root"
    for rel in ("raw/wikipedia/images.jsonl", "interim/faces/shards", "interim/faces/faces.key",
                "interim/faces/descriptors.jsonl"):
        src = src_root.root / rel
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return root


_RUN_IDENTITY = textwrap.dedent("""
    import sys
    from faces.config import IdentityConfig
    from faces.identity import check_identities
    check_identities(IdentityConfig(workers=1, batch_size=2), sys.argv[1], progress=False)
""")


@pytest.mark.slow
def test_identity_resumes_after_sigkill(pipeline_root, tmp_path):
    clean = _copy_faces(pipeline_root, tmp_path / "clean")
    (clean / "interim/faces/descriptors.jsonl").unlink()
    killed = _copy_faces(pipeline_root, tmp_path / "killed")
    journal = killed / "interim/faces/descriptors.jsonl"
    journal.unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _RUN_IDENTITY, str(killed)], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 6):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    described = journal.read_text().count("\n")
    assert described >= 6 and not (killed / "interim/faces/identity.jsonl").exists()
    from faces.identity import check_identities

    resumed = check_identities(IdentityConfig(), killed, progress=False)
    assert 0 < resumed.counts["described_now"] <= resumed.faces - described + 2
    check_identities(IdentityConfig(), clean, progress=False)
    assert (killed / "interim/faces/identity.jsonl").read_text() == (clean / "interim/faces/identity.jsonl").read_text()
    a, b = (open_dataset(r / "interim/faces/checked/shards") for r in (killed, clean))
    assert [m for m in a.iter_meta()] == [m for m in b.iter_meta()]
    assert [a.read_bytes(i) for i in range(len(a))] == [b.read_bytes(i) for i in range(len(b))]


_OFFLINE = textwrap.dedent("""
    import socket
    def refuse(*a, **k):
        raise OSError("no network in this test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    import numpy as np
    from faces.judge import FaceJudge, descriptor_version
    from wikifaces.fixtures.samples import available_photos, load_rgb
    import cv2
    photo, path = next((p, q) for p, q in available_photos(faces=True) if p.id == "grace-hopper")
    img = cv2.resize(load_rgb(path)[20:420, 100:500], (128, 128))
    d = FaceJudge().describe(np.stack([img, img[:, ::-1].copy()]))
    import json
    print(json.dumps({"shape": list(d.shape), "mirror": float(np.linalg.norm(d[0] - d[1])),
                      "model": descriptor_version()}))
""")


def test_the_descriptor_never_downloads():
    """The models are files inside installed packages: describing works with every connection refused."""
    r = subprocess.run([sys.executable, "-c", _OFFLINE], capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shape"] == [2, 128] and out["mirror"] < 0.4  # a face and its mirror image: the same person
    assert "face-recognition-models 0.3.0" in out["model"]


# -- the stage's plumbing at scale: synthetic candidates with journalled descriptors ---------------------------------
def _synthetic(root, n_people: int, seed: int = 0) -> list[dict]:
    """Candidate faces (tiny images) with descriptors already journalled: faces shared by several
    people, several faces to an image, every route, about a quarter of the faces someone else's."""
    import base64
    import hashlib
    import random

    from faces.identity import _journal
    from shards import ShardWriter
    from wikifaces.core.paths import DataRoot
    from wikifaces.core.tables import write_jsonl

    data = DataRoot(root)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    centre = [nrng.normal(0, 0.2, 128) for _ in range(n_people)]
    images, metas, descs = [], [], []
    for p in range(n_people):
        for f in range(rng.choice([1, 1, 2, 3, 5, 8])):
            sha = hashlib.sha256(f"{p}-{f}".encode()).hexdigest()
            others = [f"Q{rng.randrange(n_people)}" for _ in range(rng.choice([0, 0, 1, 2]))]
            people = list(dict.fromkeys([f"Q{p}", *others]))
            for q in people:
                routes = rng.sample(["lead", "p18", "depicts", "category", "gallery"], rng.randint(1, 2))
                images.append({"person_id": q, "sha256": sha, "status": "ok", "file": f"File:{p}-{f}.jpg",
                               "routes": routes})
            for rank in range(rng.choice([1, 1, 1, 2, 3])):
                who = p if rng.random() < 0.75 else rng.randrange(n_people)
                metas.append({"key": f"{sha[:24]}-{rank:02d}", "person_id": f"Q{p}", "person_ids": people,
                              "source_sha256": sha, "licence": "CC0"})
                descs.append(centre[who] + nrng.normal(0, 0.03, 128))
    write_jsonl(data.raw_wikipedia / "images.jsonl", images)
    data.faces.mkdir(parents=True, exist_ok=True)
    (data.faces / "faces.key").write_text("synthetic")
    with ShardWriter(data.faces / "shards", name="faces", image_size=(8, 8), encoding="png") as w:
        for meta in metas:
            w.add(np.zeros((8, 8, 3), np.uint8), meta)
    with _journal(data) as journal:
        for meta, d in zip(metas, descs, strict=True):
            journal.append({"key": meta["key"], "d": base64.b64encode(d.astype(np.float32).tobytes()).decode()})
    return images


def test_the_checked_set_follows_the_verdicts_for_faces_shared_by_several_people(tmp_path):
    """Per (person, face) verdicts carry the anchor level of every route by which that person reached
    the image; each kept face is written once, under its best verdict (verified before unchecked,
    then the nearest, then the first), with every person it is kept for; its descriptor beside it."""
    from faces.identity import KEPT, anchor_level, journalled_descriptors

    images = _synthetic(tmp_path, 300)
    s = check_identities(IdentityConfig(), tmp_path, progress=False)
    rows = list(read_jsonl(tmp_path / "interim/faces/identity.jsonl"))
    assert s.counts["described_now"] == 0 and len(rows) == sum(s.statuses.values()) > s.faces
    routes = defaultdict(set)
    for r in images:
        routes[(r["person_id"], r["sha256"])] |= set(r["routes"])
    assert [r["anchor"] for r in rows] == [anchor_level(routes[(r["person_id"], r["source_sha256"])]) for r in rows]
    assert len({r["anchor"] for r in rows}) == 3 and set(s.statuses) >= {"verified", "other_person"}
    kept = defaultdict(list)
    for r in rows:
        if r["status"] in KEPT:
            kept[r["index"]].append(r)
    assert sum(len(v) > 1 for v in kept.values()) > 10  # faces kept for several people
    checked = open_dataset(tmp_path / "interim/faces/checked/shards")
    candidates = open_dataset(tmp_path / "interim/faces/shards")
    assert len(checked) == s.kept == len(kept)
    descriptors = np.load(tmp_path / "interim/faces/checked/descriptors.npy")
    by_key = journalled_descriptors(tmp_path)
    for j, i in enumerate(sorted(kept)):
        best = min(kept[i], key=lambda r: (KEPT.index(r["status"]), r["distance"] or 0.0))
        meta = checked.read_meta(j)
        assert meta["key"] == candidates.read_meta(i)["key"] == best["key"]
        assert meta["person_id"] == best["person_id"] and meta["person_ids"] == [r["person_id"] for r in kept[i]]
        assert {k: meta["identity"][k] for k in ("status", "distance", "reference")} == \
            {"status": best["status"], "distance": best["distance"], "reference": best["reference"]}
        assert np.array_equal(descriptors[j], by_key[best["key"]])
    checked.close(), candidates.close()
    assert not (tmp_path / "interim/faces/descriptors.work.npy").exists()


def test_identity_holds_columns_not_rows(tmp_path):
    """The check holds its faces in columns and its descriptors on disk: ~20,000 faces (34,000
    person-face rows) peak far below the ~2.5 kB a face that dicts, route sets and rows took."""
    import tracemalloc

    _synthetic(tmp_path, 4000)
    tracemalloc.start()
    s = check_identities(IdentityConfig(), tmp_path, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert s.faces > 20_000 and s.counts["described_now"] == 0
    assert peak < s.faces * 1200, peak  # 52 MB before, 13 MB now


def test_the_descriptor_table_lets_its_pages_go_and_keeps_what_was_written(tmp_path):
    """identity keeps every face's descriptor in a mapped file while it runs (0.5 kB a face, a GB
    for two million): the pages it touched counted in its RSS until unmapped. `MappedRows` lets
    them go every window of rows; rows written and let go before any flush are still there."""
    from wikifaces.core.mapped import MappedRows

    from .pages import mapped_kb

    path = tmp_path / "rows.npy"
    rows = MappedRows(path, 20_000, 128, np.float32, window=256)  # 10 MB
    rng = np.random.default_rng(0)
    want = rng.random((20_000, 128), dtype=np.float32)
    peak = 0
    for i in rng.permutation(20_000).tolist():  # written in any order, as descriptors come back
        rows[i] = want[i]
        peak = max(peak, mapped_kb(path)) if i % 97 == 0 else peak
    assert 0 < peak < 2_000, peak  # a window's pages (~256 rows in 4 kB pages: ~1 MB), not 10 MB
    for i in range(0, 20_000, 7):  # read back through the mapping after their pages were let go
        np.testing.assert_array_equal(rows[i], want[i])
    np.testing.assert_array_equal(rows[np.arange(100, 400)], want[100:400])
    assert mapped_kb(path) < 2_000
    np.testing.assert_array_equal(np.load(path), want)  # and the file holds every row
    assert rows.shape == (20_000, 128) and rows.dtype == np.float32 and len(rows) == 20_000
    rows.release()
    assert mapped_kb(path) == 0
