"""Detection throughput on Wikipedia-sized portraits: our stage versus a naive detector.

Inputs: N 960-px-wide JPEGs rendered by the offline stand-in from real photographs (the size
the images stage downloads by default). Side by side in one run:
  * naive: decode, then `detectMultiScale` on the full-resolution grey image, one process,
    OpenCV's default parameters (the usual tutorial code);
  * ours: the `detect` stage's batches (decode, downscaled detection, verification, crops
    written out) over all cores, one detector per batch.
Agreement: the share of the naive detector's faces of at least `min_face` pixels that ours
also finds (IoU >= 0.5, before verification, which exists to drop some of them).

    .venv/bin/python bench/detect.py [--images 120]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# bench/scraping.py would shadow the scraping package when this file is run as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import cv2  # noqa: E402

from faces.config import DetectConfig  # noqa: E402
from faces.detect import FaceDetector, iou  # noqa: E402
from faces.stage import batches, detect_batch  # noqa: E402
from wikifaces.core.imaging import decode_rgb  # noqa: E402
from wikifaces.fixtures.standin import build_corpus  # noqa: E402


def naive(path: str) -> list[tuple[int, int, int, int]]:
    rgb = decode_rgb(Path(path).read_bytes())
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cascade = naive.cascade  # type: ignore[attr-defined]
    return [tuple(int(v) for v in b) for b in cascade.detectMultiScale(grey, 1.1, 5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    args = ap.parse_args()
    corpus = build_corpus(max(12, int(args.images * 1.2)), seed=3)
    files = [f for f in corpus.files.values() if not f.nonfree][: args.images]
    config = DetectConfig()
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for f in files:
            p = Path(d) / f"{len(paths):05d}.jpg"
            p.write_bytes(corpus.render(f.name, 960))
            paths.append(str(p))
        naive.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
        cv2.setNumThreads(1)
        t0 = time.perf_counter()
        naive_boxes = [naive(p) for p in paths]
        t_naive = time.perf_counter() - t0

        workers = os.cpu_count() or 1
        work = Path(d) / "work"
        work.mkdir()
        tasks = [(p, f"{k:064x}") for k, p in enumerate(paths)]
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(detect_batch, [tasks[:1]] * workers, [config] * workers, [work] * workers))  # warm-up
            t0 = time.perf_counter()
            chunks = batches(tasks, 8)
            results = [r for rs in pool.map(detect_batch, chunks, [config] * len(chunks), [work] * len(chunks))
                       for r in rs]
            t_ours = time.perf_counter() - t0

        # Agreement of the detector itself (ours before verification) with the naive one.
        unverified = FaceDetector(config.model_copy(update={"verify": "none"}))
        big = [[b for b in boxes if min(b[2], b[3]) >= config.min_face] for boxes in naive_boxes]
        matched = sum(
            1 for p, boxes in zip(paths, big, strict=True)
            for b in boxes
            if any(iou(det.box, b) >= 0.5 for det in unverified.detect(decode_rgb(Path(p).read_bytes())))
        )
        total = sum(len(b) for b in big)
    kept = sum(1 for r in results for f in r["faces"] if f["status"] == "ok")
    rate_naive, rate_ours = len(paths) / t_naive, len(paths) / t_ours
    print(f"images: {len(paths)} (960 px wide JPEG), cores: {workers}")
    print(f"{'detector':<58}{'images/s':>10}")
    print(f"{'naive: full-resolution detectMultiScale, 1 process':<58}{rate_naive:>10.1f}")
    print(f"{'ours: downscaled detection + MTCNN check + crops, all cores':<58}{rate_ours:>10.1f}")
    print(f"naive faces >= {config.min_face} px: {total}; found by ours: {matched}; kept after checks: {kept}")
    print(f"naive images per second: {rate_naive:.1f}")
    print(f"images per second: {rate_ours:.1f}")
    print(f"speedup: {rate_ours / rate_naive:.1f}")
    print(f"agreement: {matched / max(1, total):.3f}")


if __name__ == "__main__":
    main()
