"""Random-access read throughput: our LMDB shards versus a torchvision ImageFolder of JPEGs.

The ImageFolder is the input of pytorch/examples' dcgan/main.py. Both sides hold the same
N real 64x64 images (random crops of photographs shipped in installed packages), both are
read in the same random order, and both yield an RGB uint8 HxWx3 array per image. Ours is
measured per item (`ds[i]`) and in batches of 128 random indices (`read_images`, which
decodes on a thread pool), for PNG and JPEG datasets; the headline `ratio` is JPEG batches.

    .venv/bin/python bench/shards_read.py [--n 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder

from shards import ShardWriter, open_dataset
from wikifaces.fixtures.samples import available_photos, random_crops


def build(n: int, tmp: Path) -> tuple[Path, Path, Path]:
    per_photo = -(-n // len(available_photos()))
    png, jpeg = tmp / "shards-png", tmp / "shards-jpeg"
    folder = tmp / "imagefolder" / "all"
    folder.mkdir(parents=True)
    with ShardWriter(png, name="bench", image_size=(64, 64), encoding="png") as wp, \
         ShardWriter(jpeg, name="bench", image_size=(64, 64), encoding="jpeg", quality=95) as wj:
        for i, (image, meta) in enumerate(random_crops(64, per_photo, seed=1)):
            if i == n:
                break
            wp.add(image, meta)
            wj.add(image, meta)
            Image.fromarray(image).save(folder / f"{i:08d}.jpg", quality=95)
    return png, jpeg, folder.parent


def rate(read, order: np.ndarray) -> float:
    read(int(order[0]))  # open handles outside the clock
    t0 = time.perf_counter()
    for i in order:
        read(int(i))
    return len(order) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        png, jpeg, folder = build(args.n, Path(d))
        ours_png, ours_jpeg, folder_ds = open_dataset(png), open_dataset(jpeg), ImageFolder(str(folder))
        rng = np.random.default_rng(0)
        results: dict[str, list[float]] = {k: [] for k in ("imagefolder", "png", "jpeg", "png_batch", "jpeg_batch")}
        for _ in range(args.repeats):  # interleaved, best of `repeats`
            order = rng.permutation(args.n)
            results["imagefolder"].append(rate(lambda i: np.asarray(folder_ds[i][0]), order))
            results["png"].append(rate(lambda i: ours_png[i], order))
            results["jpeg"].append(rate(lambda i: ours_jpeg[i], order))
            for key, ds in (("png_batch", ours_png), ("jpeg_batch", ours_jpeg)):
                t0 = time.perf_counter()
                for chunk in np.array_split(order, max(1, args.n // 128)):
                    ds.read_images(chunk)
                results[key].append(args.n / (time.perf_counter() - t0))
        best = {k: max(v) for k, v in results.items()}
    base = best["imagefolder"]
    print(f"images: {args.n} (64x64, random order, best of {args.repeats})")
    print(f"{'reader':<40}{'images/s':>12}{'vs ImageFolder':>16}")
    for label, key in [
        ("torchvision ImageFolder (JPEG files)", "imagefolder"),
        ("shards, PNG, ds[i]", "png"),
        ("shards, JPEG q95, ds[i]", "jpeg"),
        ("shards, PNG, read_images(128)", "png_batch"),
        ("shards, JPEG q95, read_images(128)", "jpeg_batch"),
    ]:
        print(f"{label:<40}{best[key]:>12,.0f}{best[key] / base:>15.1f}x")
    print(f"imagefolder images per second: {base:.0f}")
    print(f"shards images per second: {best['jpeg_batch']:.0f}")
    print(f"ratio per item jpeg: {best['jpeg'] / base:.1f}")
    print(f"ratio per item png: {best['png'] / base:.1f}")
    print(f"ratio batch png: {best['png_batch'] / base:.1f}")
    # Headline: JPEG datasets read in batches, the way the trainer and bulk readers read them.
    print(f"ratio: {best['jpeg_batch'] / base:.1f}")


if __name__ == "__main__":
    main()
