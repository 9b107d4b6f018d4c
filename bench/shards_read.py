"""Random-access read throughput and size on disk: our LMDB shards in every encoding versus a
torchvision ImageFolder of JPEGs.

The ImageFolder is the input of pytorch/examples' dcgan/main.py. Every side holds the same N
real 64x64 images (random crops of photographs shipped in installed packages), all are read in
the same random order, and all yield an RGB uint8 HxWx3 array per image (ours with its metadata
dict too). Ours is measured per item (`ds[i]`) and in batches of 128 random indices
(`read_images`), for PNG, JPEG q95 (4:4:4), QOI and raw datasets, one record per LMDB value or in
blocks of 64; sizes are the bytes on disk (LMDB stores each value of over ~2 kB in whole 4 kB pages,
the file system each JPEG file in whole 4 kB blocks). The headline figures are for the default of
published datasets (`PublishConfig.encoding` and `.block`); "size vs jpeg dataset" compares it with
the ImageFolder of JPEGs it replaces, "size vs jpeg shards" with our JPEG shards in blocks.

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
from wikifaces.publish import PublishConfig

VARIANTS = (("png", 1), ("jpeg", 1), ("jpeg", 64), ("qoi", 1), ("qoi", 64), ("raw", 1), ("raw", 64))


def label(variant: tuple[str, int]) -> str:
    enc, block = variant
    return enc if block == 1 else f"{enc} blocks of {block}"


def build(n: int, tmp: Path) -> tuple[dict[str, Path], Path]:
    per_photo = -(-n // len(available_photos()))
    paths = {label(v): tmp / f"shards-{v[0]}-{v[1]}" for v in VARIANTS}
    folder = tmp / "imagefolder" / "all"
    folder.mkdir(parents=True)
    writers = {label(v): ShardWriter(paths[label(v)], name="bench", image_size=(64, 64), encoding=v[0], block=v[1],
                                     quality=95) for v in VARIANTS}
    for i, (image, meta) in enumerate(random_crops(64, per_photo, seed=1)):
        if i == n:
            break
        for w in writers.values():
            w.add(image, meta)
        Image.fromarray(image).save(folder / f"{i:08d}.jpg", quality=95)
    for w in writers.values():
        w.close()
    return paths, folder.parent


def disk_bytes(path: Path) -> int:
    """Bytes on disk (allocated blocks), not apparent sizes."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def rate(read, order: np.ndarray) -> float:
    read(int(order[0]))  # open handles outside the clock
    t0 = time.perf_counter()
    for i in order:
        read(int(i))
    return len(order) / (time.perf_counter() - t0)


def batched(ds, order: np.ndarray) -> float:
    t0 = time.perf_counter()
    for chunk in np.array_split(order, max(1, len(order) // 128)):
        ds.read_images(chunk)
    return len(order) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        paths, folder = build(args.n, Path(d))
        ours = {enc: open_dataset(p) for enc, p in paths.items()}
        folder_ds = ImageFolder(str(folder))
        sizes = {enc: disk_bytes(p) for enc, p in paths.items()} | {"imagefolder": disk_bytes(folder)}
        rng = np.random.default_rng(0)
        results: dict[str, list[float]] = {"imagefolder": []}
        for _ in range(args.repeats):  # interleaved, best of `repeats`
            order = rng.permutation(args.n)
            results["imagefolder"].append(rate(lambda i: np.asarray(folder_ds[i][0]), order))
            for enc, ds in ours.items():
                results.setdefault(enc, []).append(rate(ds.__getitem__, order))
                results.setdefault(f"{enc}_batch", []).append(batched(ds, order))
        best = {k: max(v) for k, v in results.items()}
    base = best["imagefolder"]
    print(f"images: {args.n} (64x64, random order, best of {args.repeats})")
    print(f"{'reader':<34}{'bytes/image':>12}{'vs JPEGs':>9}{'ds[i] /s':>11}{'ratio':>7}{'batch /s':>11}{'ratio':>7}")
    print(f"{'torchvision ImageFolder (JPEG)':<34}{sizes['imagefolder'] / args.n:>12,.0f}{'1.00x':>9}{base:>11,.0f}"
          f"{1.0:>7.1f}{'':>18}")
    for name in ours:
        per, bat = best[name], best[f"{name}_batch"]
        print(f"{'shards, ' + name:<34}{sizes[name] / args.n:>12,.0f}{sizes[name] / sizes['imagefolder']:>8.2f}x"
              f"{per:>11,.0f}{per / base:>7.1f}{bat:>11,.0f}{bat / base:>7.1f}")
    default = label((PublishConfig().encoding, PublishConfig().block))
    print(f"imagefolder images per second: {base:.0f}")
    for name in ours:
        print(f"ratio per item {name}: {best[name] / base:.1f}")
        print(f"ratio batched {name}: {best[f'{name}_batch'] / base:.1f}")
        print(f"size vs jpeg dataset {name}: {sizes[name] / sizes['imagefolder']:.2f}")
    print(f"default encoding: {default}")
    print(f"ratio: {best[default] / base:.1f}")
    print(f"ratio batched: {best[f'{default}_batch'] / base:.1f}")
    print(f"size vs jpeg dataset: {sizes[default] / sizes['imagefolder']:.2f}")
    print(f"size vs jpeg shards: {sizes[default] / sizes['jpeg blocks of 64']:.2f}")


if __name__ == "__main__":
    main()
