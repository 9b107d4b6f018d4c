"""Which lossless codec for 64x64 shards: bytes per image against decode time, one thread.

The shard format's choice of `qoi` rests on this survey: real 64x64 crops (as bench/shards_read.py
uses), each codec's bytes per image and its decode time per image on one thread, with JPEG q95
(4:4:4) as the lossy reference. General-purpose compressors are tried on the raw pixels as they
are and after a left-neighbour ("sub") filter on planar channels, the best-compressing filter
measured. Codecs from `pip install -e '.[bench]'` (imagecodecs, zstandard, lz4) are skipped with
a note when missing.

    .venv/bin/python bench/codecs.py [--n 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from shards.format import decode_image, encode_image  # noqa: E402
from wikifaces.fixtures.samples import available_photos, random_crops  # noqa: E402

Codec = tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray], bool]


def _sub(im: np.ndarray) -> bytes:
    planes = np.ascontiguousarray(im.transpose(2, 0, 1))
    d = planes.copy()
    d[:, :, 1:] -= planes[:, :, :-1]
    return d.tobytes()


def _unsub(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    h, w, c = shape
    return np.cumsum(np.frombuffer(data, np.uint8).reshape(c, h, w), axis=2, dtype=np.uint8).transpose(1, 2, 0)


def codecs(shape: tuple[int, int, int]) -> tuple[dict[str, Codec], list[str]]:
    """name -> (encode, decode, lossless); and the names skipped for a missing package."""
    ours = {enc: (lambda im, e=enc: encode_image(im, e, 95), decode_image, enc != "jpeg")
            for enc in ("jpeg", "png", "qoi", "raw")}
    out: dict[str, Codec] = {"jpeg q95 4:4:4": ours["jpeg"], "png (OpenCV, level 3)": ours["png"],
                             "qoi": ours["qoi"], "raw": ours["raw"]}
    missing = []
    n = int(np.prod(shape))
    try:
        import lz4.block

        out["raw + lz4"] = (lambda im: lz4.block.compress(im.tobytes(), store_size=False),
                            lambda b: np.frombuffer(lz4.block.decompress(b, uncompressed_size=n), np.uint8
                                                    ).reshape(shape), True)
    except ImportError:
        missing.append("lz4")
    try:
        import zstandard

        zd = zstandard.ZstdDecompressor()
        for level in (3, 19):
            zc = zstandard.ZstdCompressor(level=level)
            out[f"raw + zstd {level}"] = (lambda im, zc=zc: zc.compress(im.tobytes()),
                                          lambda b: np.frombuffer(zd.decompress(b), np.uint8).reshape(shape), True)
            out[f"sub filter + zstd {level}"] = (lambda im, zc=zc: zc.compress(_sub(im)),
                                                 lambda b: _unsub(zd.decompress(b), shape), True)
    except ImportError:
        missing.append("zstandard")
    try:
        import imagecodecs as ic

        out["webp lossless"] = (lambda im: ic.webp_encode(im, lossless=True), ic.webp_decode, True)
        out["png (libspng)"] = (ic.spng_encode, ic.spng_decode, True)
        out["htj2k lossless"] = (ic.htj2k_encode, ic.htj2k_decode, True)
        out["jpeg-xl lossless, effort 1"] = (lambda im: ic.jpegxl_encode(im, lossless=True, effort=1),
                                             ic.jpegxl_decode, True)
    except ImportError:
        missing.append("imagecodecs")
    return out, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    per_photo = -(-args.n // len(available_photos()))
    images = [np.ascontiguousarray(im) for im, _ in random_crops(64, per_photo, seed=1)][:args.n]
    table, missing = codecs(images[0].shape)
    rows = {}
    for name, (enc, dec, lossless) in table.items():
        blobs = [enc(im) for im in images]
        if lossless:
            assert all(np.array_equal(np.asarray(dec(b)), im) for b, im in zip(blobs[:50], images, strict=False)), name
        dec(blobs[0])
        t0 = time.perf_counter()
        for b in blobs:
            dec(b)
        rows[name] = (float(np.mean([len(b) for b in blobs])), (time.perf_counter() - t0) / len(blobs) * 1e6, lossless)
    jpeg = rows["jpeg q95 4:4:4"][0]
    print(f"images: {len(images)} real 64x64 crops; decode on one thread")
    print(f"{'codec':<30}{'bytes':>8}{'vs JPEG':>9}{'us/decode':>11}  lossless")
    for name, (size, us, lossless) in sorted(rows.items(), key=lambda kv: kv[1][1]):
        print(f"{name:<30}{size:>8,.0f}{size / jpeg:>8.2f}x{us:>11.1f}  {'yes' if lossless else 'no'}")
    if missing:
        print(f"skipped (pip install -e '.[bench]'): {', '.join(missing)}")
    png = rows["png (OpenCV, level 3)"]
    faster = [n for n, (s, us, ll) in rows.items() if ll and us < png[1] and s <= 1.25 * png[0]]
    best = min(faster, key=lambda n: rows[n][1])
    print(f"lossless codecs faster than png at similar size: {', '.join(sorted(faster, key=lambda n: rows[n][1]))}")
    print(f"fastest lossless codec at similar size: {best}")
    print(f"qoi bytes per image: {rows['qoi'][0]:.0f}")
    print(f"qoi decode us: {rows['qoi'][1]:.1f}")
    print(f"png decode us: {png[1]:.1f}")


if __name__ == "__main__":
    main()
