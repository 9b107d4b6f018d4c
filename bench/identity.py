"""Is each kept face the person it is filed under? Precision and recall of the `identity` stage.

Two measurements, each over a sweep of the distance threshold (the default is marked):

* **Real photographs** (`wikifaces.fixtures.samples`): face_recognition's test pictures show
  Barack Obama on three occasions (plus two crops of one portrait) and Joe Biden once; every other
  single-face photograph in the registry is a different person; the group photographs hold
  several people. Each scenario is one "person" as a build would see them: a lead image (or none,
  or a group photo) and a category of their other photographs mixed with impostors and group
  photographs. Faces are found by the `detect` stage's own code on the original files.
* **The stand-in** (synthetic stress): a stand-in build whose Commons categories hold other shots of
  each person, another person's photo, group photos, pictures without faces and copies of the lead
  image, through names -> images -> detect -> identity; the truth is what the stand-in put there.

Precision: of the faces kept (verified, or unchecked for people with one face), the share that are
the person. Recall: of the faces that are the person, the share kept. Faces whose person is not
defined (several people in a person's own photograph) are left out of both. The headline leaves
out one kind of real scenario, printed apart: a person without a lead image whose category holds
more photographs of someone else than of them (no rule can tell without outside knowledge).

    .venv/bin/python bench/identity.py [--people 120]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]  # our scripts shadow packages

import numpy as np  # noqa: E402

from faces.config import DetectConfig, IdentityConfig  # noqa: E402
from faces.identity import KEPT, Face, FaceTable, check_person, journalled_descriptors, person_verdicts  # noqa: E402
from faces.judge import FaceJudge, descriptor_version  # noqa: E402
from faces.stage import process_image  # noqa: E402
from shards.format import decode_image  # noqa: E402
from wikifaces.fixtures.samples import available_photos  # noqa: E402

THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65)


def real_faces(judge: FaceJudge) -> dict[str, list[np.ndarray]]:
    """Photo id -> descriptors of the faces the detect stage keeps in it (largest first)."""
    out: dict[str, list[np.ndarray]] = {}
    for photo, path in available_photos(faces=True, demo_only=False):
        result = process_image(str(path), photo.id, DetectConfig())
        crops = [decode_image(f["crop_bytes"]) for f in result["faces"] if f["status"] == "ok"]
        if crops:
            out[photo.id] = list(judge.describe(np.stack(crops)))
    return out


def real_scenarios(faces: dict[str, list[np.ndarray]], seed: int = 0
                   ) -> list[tuple[str, list[tuple[Face, bool | None]]]]:
    """People as a build sees them: (kind, [(face, is the person)]); None where nobody knows. Kinds:
    `lead` (their lead image is one of their photographs), `no lead`, `group lead` (the lead image is
    a group photo), and `outnumbered` (no lead, and another person has more photographs in their
    category than they do: no rule without outside knowledge can tell, so reported apart)."""
    photos = {p.id: p for p, _ in available_photos(faces=True, demo_only=False)}
    subjects: dict[str, list[str]] = {}
    for pid in faces:
        s = photos[pid].subject or (pid if photos[pid].faces == 1 else None)
        if s is not None:
            subjects.setdefault(s, []).append(pid)
    singles = [pid for pid in faces if photos[pid].faces == 1]
    groups = [pid for pid in faces if photos[pid].faces > 1]
    rng = random.Random(seed)
    scenarios = []

    def faces_of(pid: str, anchor: int, truth: bool | None) -> list[tuple[Face, bool | None]]:
        return [(Face(f"{pid}-{k}", pid, d, anchor), truth if k == 0 or photos[pid].faces == 1 else False)
                for k, d in enumerate(faces[pid][: 1 if photos[pid].faces == 1 else None])]

    for subject, own in subjects.items():
        if len(own) < 2 and subject != "Joe Biden":
            continue
        others = [pid for pid in singles if photos[pid].subject != subject and pid not in own]
        leads: list[str | None] = [*own, None, "group"]
        for lead in leads:
            kind = "group lead" if lead == "group" else "no lead" if lead is None else "lead"
            if subject == "Joe Biden" and lead in (None, "group"):
                kind = "outnumbered"
            for trial in range(3):
                people: list[tuple[Face, bool | None]] = []
                if lead == "group":
                    g = rng.choice(groups)
                    people += [(f, None) for f, _ in faces_of(g, 2, None)]  # the person may be in it: unknown
                elif lead is not None:
                    people += faces_of(lead, 2, True)
                people += [x for pid in own if pid != lead for x in faces_of(pid, 0, True)]
                impostors = rng.sample(others, k=min(len(others), rng.randint(1, 4)))
                if subject == "Joe Biden":  # the hard case: the impostor has more photos than the person
                    impostors += [p for p in subjects.get("Barack Obama", []) if p not in impostors]
                people += [x for pid in impostors for x in faces_of(pid, 0, False)]
                if groups and trial % 2 == 0:
                    people += [(f, False) for f, _ in faces_of(rng.choice(groups), 0, False)]
                scenarios.append((kind, people))
    return scenarios


def score(pairs: list[tuple[str, bool | None]]) -> tuple[float, float, int, int]:
    """(precision, recall, kept, true) over (status, truth) pairs with a known truth."""
    known = [(s, t) for s, t in pairs if t is not None]
    kept = [t for s, t in known if s in KEPT]
    true = [s for s, t in known if t]
    precision = sum(kept) / len(kept) if kept else 0.0
    recall = sum(s in KEPT for s in true) / len(true) if true else 0.0
    return precision, recall, len(kept), len(true)


def standin_build(people: int, root: Path
                  ) -> tuple[FaceTable, np.ndarray, np.ndarray, Callable[[str, str], bool | None]]:
    """Run names -> images -> detect -> identity on a stand-in; what the sweep needs, and the truth."""
    import json

    from scraping.config import HttpConfig, ImagesConfig, NamesConfig
    from shards import open_dataset
    from wikifaces.fixtures.standin import StandinServer, build_corpus
    from wikifaces.pipeline import run_stage

    corpus = build_corpus(people, all_photos=True)
    with StandinServer(corpus) as server:
        http = HttpConfig(**server.endpoints(), contact="wikifaces bench", api_requests_per_second=50, cache=False)
        run_stage("names", NamesConfig(categories=("Stand-in everyone",), http=http), root, progress=False)
        run_stage("images", ImagesConfig(http=http), root, progress=False)
    run_stage("detect", DetectConfig(), root, progress=False)
    run_stage("identity", IdentityConfig(), root, progress=False)
    ds = open_dataset(root / "interim/faces/shards")
    table = FaceTable(ds.iter_meta())
    ds.close()
    by_key = journalled_descriptors(root)
    descriptors = np.stack([by_key[table.key(i)] for i in range(len(table))])  # row i: record i
    levels = table.anchor_levels(root / "raw/wikipedia/images.jsonl")
    # truth: a face is the person when its file shows the person's own subject and only one face
    from wikifaces.fixtures.samples import all_photos

    photos = {p.id: p for p in all_photos()}
    files_of: dict[tuple[str, str], str] = {}
    for line in (root / "raw/wikipedia/images.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["sha256"]:
            files_of.setdefault((r["person_id"], r["sha256"]), r["file"])
    by_qid = {p.qid: p for p in corpus.humans}

    def truth(person_id: str, sha: str) -> bool | None:
        f = corpus.files[files_of[(person_id, sha)]]
        p = by_qid[person_id]
        lead = corpus.files.get(p.p18 or p.image or "")
        if lead is None:
            return None
        who = photos[lead.photo].subject or lead.photo
        shows = photos[f.photo].subject or f.photo
        if photos[f.photo].faces != 1:
            return False if shows != who else None
        return shows == who and photos[lead.photo].faces == 1

    return table, descriptors, levels, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=120, help="stand-in people")
    args = ap.parse_args()
    default = IdentityConfig()
    print(f"descriptor: {descriptor_version()}")
    t0 = time.perf_counter()
    judge = FaceJudge()
    faces = real_faces(judge)
    scenarios = real_scenarios(faces)
    n_faces = sum(len(s) for _, s in scenarios)
    print(f"real photographs: {len(faces)} photographs with faces found, {len(scenarios)} people-scenarios, "
          f"{n_faces} (person, face) pairs ({time.perf_counter() - t0:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table, descriptors, levels, truth = standin_build(args.people, Path(tmp))
        print(f"stand-in: {args.people} people, {len(table)} kept faces ({time.perf_counter() - t0:.0f} s)")
        rows_at = {}
        print("\n| threshold | real precision | real recall | stand-in precision | stand-in recall | all precision "
              "| all recall |")
        print("|---|---|---|---|---|---|---|")
        results = {}
        by_kind: dict[float, dict[str, tuple[float, float, int, int]]] = {}
        for th in sorted({*THRESHOLDS, default.threshold}):
            cfg = IdentityConfig(threshold=th, group_distance=min(default.group_distance, th))
            real_by: dict[str, list[tuple[str, bool | None]]] = {}
            for kind, people in scenarios:
                real_by.setdefault(kind, []).extend(
                    (v.status, t) for (f, t), v in zip(people, check_person([f for f, _ in people], cfg), strict=True))
            real = [x for kind, xs in real_by.items() if kind != "outnumbered" for x in xs]
            by_kind[th] = {kind: score(xs) for kind, xs in real_by.items()}
            rows_at[th] = list(person_verdicts(cfg, table, descriptors, levels))
            stand = [(r["status"], truth(r["person_id"], r["source_sha256"])) for r in rows_at[th]]
            rp, rr, _, _ = score(real)
            sp, sr, _, _ = score(stand)
            ap_, ar, kept, true = score(real + stand)
            results[th] = (rp, rr, sp, sr, ap_, ar, kept, true)
            mark = " (default)" if th == default.threshold else ""
            print(f"| {th:.2f}{mark} | {rp:.3f} | {rr:.3f} | {sp:.3f} | {sr:.3f} | {ap_:.3f} | {ar:.3f} |")
        print("\nreal photographs by kind of person, at the default (precision / recall, kept, true):")
        for kind, (p_, r_, k_, t_) in by_kind[default.threshold].items():
            print(f"  {kind}: {p_:.3f} / {r_:.3f} ({k_} kept, {t_} true)")
        statuses = Counter(r["status"] for r in rows_at[default.threshold])
        print(f"\nstand-in statuses at the default: {dict(statuses)}")
    rp, rr, sp, sr, ap_, ar, kept, true = results[default.threshold]
    print(f"\nthreshold: {default.threshold}")
    out = by_kind[default.threshold].get("outnumbered")
    if out:
        print(f"identity precision (real, outnumbered, not in the headline): {out[0]:.3f}")
    print(f"identity precision (real photographs): {rp:.3f}")
    print(f"identity recall (real photographs): {rr:.3f}")
    print(f"identity precision (stand-in): {sp:.3f}")
    print(f"identity recall (stand-in): {sr:.3f}")
    print(f"identity precision: {ap_:.3f}")
    print(f"identity recall: {ar:.3f}")


if __name__ == "__main__":
    main()
