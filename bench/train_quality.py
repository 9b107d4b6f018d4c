"""DCGAN at 64 px on a face set the stand-in build makes: DiffAugment against the paper's recipe.

The face set: a faces build (names, images, detect, publish at 64 px) on the offline stand-in
with `--people` people. The stand-in's portraits are variants (crop, flip, gain, scale) of the
~40 faces in the registry packages' photographs, so near-duplicate removal would leave ~50; this
bench publishes without it (`use_dedup=False`): several hundred real face crops of a few dozen
faces. Then two runs, same seed, width, batch and number of steps, `--augment none` and
`--augment diffaug`; sample quality (training.quality with faces.judge.FaceJudge: face rate,
Fréchet distance / precision / recall in dlib's 128-d face-descriptor space, NOT FID) every
`--quality-every` steps on 256 samples. Both sample grids and the curves are saved in `--out`.

    .venv/bin/python bench/train_quality.py [--people 400] [--steps 2000] [--width 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# bench/scraping.py shadows the `scraping` package when bench/ is on the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from wikifaces.core.paths import DataRoot  # noqa: E402


def build_faces(work: Path, people: int) -> Path:
    """The stand-in build up to the detected crops (skipped stage by stage when already done), then
    every kept crop at 64 px as a dataset: the set the README's figures were measured on (lead images,
    no alignment, every detected face, without the identity check or dedup, which came later or would
    remove the stand-in's variants of one photograph)."""
    import cv2

    from faces import DetectConfig
    from scraping.config import HttpConfig, ImagesConfig, NamesConfig
    from shards import is_complete, open_dataset, write_shards
    from wikifaces.fixtures.standin import StandinServer, build_corpus
    from wikifaces.pipeline import run_stage

    root = DataRoot(work / "data")
    with StandinServer(build_corpus(people, all_photos=True)) as server:
        http = HttpConfig(**server.endpoints(), contact="wikifaces bench", api_requests_per_second=50,
                          download_bytes_per_second=100_000_000, max_concurrent_downloads=4)
        run_stage("names", NamesConfig(categories=("Stand-in people",), category_depth=2, http=http), root)
        run_stage("images", ImagesConfig(http=http, max_images_per_person=1), root)
    run_stage("detect", DetectConfig(align="none"), root)
    out = root.processed("faces-64-all")
    if not is_complete(out):
        crops = open_dataset(root.faces / "shards")
        write_shards(((cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA), {"key": meta["key"]})
                      for image, meta in crops), out, name="faces-64-all", image_size=(64, 64),
                     encoding="jpeg", quality=95, parameters={"source": "faces"})  # as publish wrote it
    return out


def plot_curves(out: Path) -> Path:
    """Face rate and Fréchet distance over steps, both runs, from the saved quality-*.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for augment in ("none", "diffaug"):
        curve = json.loads((out / f"quality-{augment}.json").read_text())
        steps = [q["step"] for q in curve]
        a.plot(steps, [q["face_rate"] for q in curve], marker="o", label=f"--augment {augment}")
        b.plot(steps, [q["fd_dlib128"] for q in curve], marker="o", label=f"--augment {augment}")
        ceiling = curve[-1]["face_rate_real"]
    a.axhline(ceiling, color="grey", ls="--", lw=1, label="real crops")
    a.set(xlabel="step", ylabel="face rate", ylim=(0, 1.05), title="face rate of 256 samples")
    b.set(xlabel="step", ylabel="Fréchet distance", title="Fréchet distance, dlib descriptors (not FID)")
    a.legend()
    b.legend()
    fig.tight_layout()
    path = out / "quality-curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--steps", type=int, default=2000, help="training steps of each run")
    ap.add_argument("--width", type=int, default=128, help="G and D channels at 4x4")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--quality-every", type=int, default=500)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wikifaces-train-quality"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/train_quality"))
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--plot-only", action="store_true", help="redraw the curves of the last run from --out")
    args = ap.parse_args()
    if args.plot_only:
        print(f"curves: {plot_curves(args.out)}")
        return
    from faces.judge import FaceJudge
    from shards import open_dataset
    from training import TrainConfig, train_dcgan

    t0 = time.perf_counter()
    dataset = build_faces(args.work, args.people)
    n = len(open_dataset(dataset))
    build_minutes = (time.perf_counter() - t0) / 60
    if args.build_only:
        print(f"faces: {n}; built in {build_minutes:.1f} min")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    judge = FaceJudge()
    results = {}
    for augment in ("none", "diffaug"):
        config = TrainConfig(dataset=dataset, image_size=64, g_width=args.width, d_width=args.width,
                             batch_size=args.batch, max_steps=args.steps, augment=augment, seed=0,
                             quality_every=args.quality_every, quality_samples=256, sample_every=args.quality_every,
                             checkpoint_every=10 * args.steps, runs_dir=args.work / "runs", desc=f"bench-{augment}")
        t1 = time.perf_counter()
        summary = train_dcgan(config, progress=False, judge=judge)
        minutes = (time.perf_counter() - t1) / 60
        rows = [json.loads(line) for line in (summary.run_dir / "metrics.jsonl").read_text().splitlines()]
        curve = [r["quality"] for r in rows if "quality" in r]
        grid = sorted((summary.run_dir / "samples").glob("step-*.png"))[-1]
        shutil.copy(grid, args.out / f"samples-{augment}.png")
        (args.out / f"quality-{augment}.json").write_text(json.dumps(curve, indent=1))
        results[augment] = {"curve": curve, "minutes": minutes, "rate": summary.images_per_second,
                            "warnings": summary.warnings}
    print(f"face set: {n} faces at 64 px from {args.people} stand-in people (no dedup), built in "
          f"{build_minutes:.1f} min; width {args.width}, batch {args.batch}, {args.steps} steps per run")
    print(f"{'augment':<9}{'step':>6}{'face rate':>11}{'real':>7}{'FD dlib':>9}{'precision':>11}{'recall':>8}")
    for augment, r in results.items():
        for q in r["curve"]:
            print(f"{augment:<9}{q['step']:>6}{q['face_rate']:>11.3f}{q['face_rate_real']:>7.3f}{q['fd_dlib128']:>9.3f}"
                  f"{q['precision_dlib128']:>11.3f}{q['recall_dlib128']:>8.3f}")
        print(f"{augment:<9} {r['minutes']:.1f} min, {r['rate']:.0f} img/s; warnings: {len(r['warnings'])}")
    print(f"sample grids: {args.out}/samples-none.png, {args.out}/samples-diffaug.png; curves: {plot_curves(args.out)}")
    for augment in ("diffaug", "none"):
        last = results[augment]["curve"][-1]
        print(f"face rate ({augment}): {last['face_rate']:.3f}")
    print(f"face rate (real crops): {results['none']['curve'][-1]['face_rate_real']:.3f}")
    for augment in ("diffaug", "none"):
        last = results[augment]["curve"][-1]
        print(f"frechet distance dlib ({augment}): {last['fd_dlib128']:.4f}")
        print(f"precision dlib ({augment}): {last['precision_dlib128']:.3f}")
        print(f"recall dlib ({augment}): {last['recall_dlib128']:.3f}")


if __name__ == "__main__":
    main()
