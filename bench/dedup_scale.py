"""Dedup at LSUN bedroom scale: the search over 3M hashes, and hashing throughput.

Search: 3,033,042 synthetic 64-bit codes shaped like real perceptual hashes (clustered: codes
drawn around 10,000 centres, each bit flipped with probability 0.15) with 5 % planted
near-duplicates (0..8 bits from an earlier code), at the default threshold and at t = 8. Ours runs in a
fresh process so that its peak memory (max RSS, Python and numba included) is its own. Beside
it, faiss `IndexBinaryMultiHash` at exact settings (3 tables of 21 bits, nflip = floor(t/3)) on
a 300k subset and a 100k subset, extrapolated to 3M with the growth exponent measured between
them (said so in the output); our search runs on the same subsets.

Hashing: N real 256 px WebP files (photographs from installed packages); ours (all cores, the
stage's per-image code) versus imagededup's `PHash().encode_images` (all cores, its default),
installed with --no-deps into bench/.envs/imagededup so that it is not a project dependency.

Verification (dedup/verify.py): milliseconds a candidate pair on 64 px pictures from the packaged
photographs (near-duplicate pairs and unrelated pairs, half each), one core; `--verify-only`
measures that alone.

With verification, the stage's default at 3M: the search at the candidate radius, the re-framed
copies' searches (each synthetic code gets two re-framed codes, its bits flipped with the
probabilities measured between real pictures' own and re-framed phash: 0.18 for the centre,
0.29 for the top), and the verification of the candidates (at most max_verified_pairs, the
closest first) at the measured cost a pair over all cores, side by side with the search alone at
the hash-alone threshold. `--with-verify-only` runs that part alone.

    .venv/bin/python bench/dedup_scale.py [--n 3033042] [--files 3000] [--verify-only] [--with-verify-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from dedup.config import DedupConfig

ROOT = Path(__file__).resolve().parent.parent
IMAGEDEDUP = ROOT / "bench" / ".envs" / "imagededup"


def synthetic_codes(n: int, t: int, seed: int = 0) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**64 - 1, max(1, n // 300), dtype=np.uint64, endpoint=True)
    codes = centres[rng.integers(0, len(centres), n)]
    for a in range(0, n, 250_000):
        b = min(n, a + 250_000)
        flips = rng.random((b - a, 64)) < 0.15
        codes[a:b] ^= np.packbits(flips.astype(np.uint8), axis=1, bitorder="little").view(np.uint64).ravel()
    k = n // 20
    src, dst = rng.integers(0, n, k), rng.choice(n, k, replace=False)
    masks = np.zeros(k, np.uint64)
    nbits = rng.integers(0, t + 1, k)
    for bit in range(64):  # flip exactly nbits[i] random bits of each planted copy
        pick = rng.random(k) < nbits / (64 - bit)
        masks |= pick.astype(np.uint64) << np.uint64(bit)
        nbits = nbits - pick
    codes[dst] = codes[src] ^ masks
    return codes, k


_SEARCH = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from dedup.search import find_pairs
    codes = np.load(sys.argv[1]); t = int(sys.argv[2])
    tp = int(sys.argv[3]) if len(sys.argv) > 3 else None  # with a probe threshold: the re-framed searches too
    budget = int(sys.argv[4]) if len(sys.argv) > 4 else None  # and the fewest checks verification could make
    find_pairs(codes[:2000], t)  # compile outside the clock
    if tp is not None:
        find_pairs(codes[:2000], tp, queries=codes[:100])
    t0 = time.perf_counter()
    uniq = np.unique(codes)
    found = find_pairs(uniq, t)
    pairs = len(found)
    own = time.perf_counter() - t0
    # with a budget, only its closest are kept for the count below (48 MB, not the 18M pairs' 430)
    framed, kept = 0, [found[np.argsort(found[:, 2], kind="stable")[:budget]]] if budget else []
    del found
    rng = np.random.default_rng(1)
    # per-bit flips between a real picture's phash and its re-framed copies' (centre, top)
    for p in (0.18, 0.29) if tp is not None else ():
        flips = np.packbits(rng.random((len(uniq), 64)) < p, axis=1, bitorder="little").view(np.uint64).ravel()
        q = find_pairs(uniq, tp, queries=uniq ^ flips)
        framed += int((q[:, 0] != q[:, 1]).sum())
        if budget:
            kept.append(q[q[:, 0] != q[:, 1]])
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the search's, not the count's below
    fewest = None
    if budget:  # every check passing: the first round (the budget's spanning forest) is all it checks
        from dedup.clusters import spanning
        both = np.concatenate(kept)
        del kept
        both = both[np.argsort(both[:, 2], kind="stable")[:budget]]
        fewest = int(spanning(np.arange(len(uniq)), both[:, :2]).sum())
    print(json.dumps({"seconds": seconds, "own_seconds": own, "pairs": pairs, "framed": framed, "unique": len(uniq),
                      "rss_mb": rss, "fewest_checks": fewest}))
""")


def with_verification(codes_path: Path, ms: float) -> dict:
    """The default (verified) settings at scale: both searches measured, the verification of the
    candidates (within the budget) computed from the measured cost a pair over all cores. Verification
    skips a pair whose records checked pairs have already joined, so what it checks lies between the
    budget's spanning forest (every check passing) and the whole budget (every check failing)."""
    d = DedupConfig()
    r = ours(codes_path, d.candidate_threshold, d.probe_threshold, d.max_verified_pairs)
    r["candidates"] = r["pairs"] + r["framed"]
    r["verified"] = min(r["candidates"], d.max_verified_pairs)
    r["verify_seconds"] = r["verified"] * ms / 1000 / (os.cpu_count() or 1)
    r["verify_seconds_min"] = r["fewest_checks"] * ms / 1000 / (os.cpu_count() or 1)
    return r


def ours(codes_path: Path, t: int, probe_threshold: int | None = None, budget: int | None = None) -> dict:
    """Our search in a child process (its own peak memory); with `probe_threshold`, the re-framed
    copies' searches as well; with `budget`, the spanning forest of the closest `budget` of all
    those pairs (outside the clock)."""
    extra = [] if probe_threshold is None else [str(probe_threshold), *([str(budget)] if budget else [])]
    out = subprocess.run([sys.executable, "-c", _SEARCH, str(codes_path), str(t), *extra], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def faiss_multihash(codes: np.ndarray, t: int) -> tuple[float, int]:
    import faiss

    uniq = np.unique(codes)
    data = uniq.view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryMultiHash(64, 3, 21)
    index.nflip = t // 3  # exact: some table differs in at most floor(t / 3) bits
    index.add(data)
    t0 = time.perf_counter()
    lims, _, labels = index.range_search(data, t + 1)  # strictly closer than t + 1
    seconds = time.perf_counter() - t0
    pairs = sum(1 for q in range(len(uniq)) for j in labels[lims[q] : lims[q + 1]] if j > q)
    return seconds, pairs


def hashing_throughput(files: int) -> tuple[float, float]:
    import cv2

    from dedup.hashing import hash_bytes
    from wikifaces.fixtures.samples import random_crops

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "webp"
        folder.mkdir()
        for i, (img, _) in enumerate(random_crops(256, -(-files // 11), seed=5)):
            if i == files:
                break
            _, buf = cv2.imencode(".webp", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 85])
            (folder / f"{i:06d}.webp").write_bytes(buf.tobytes())
        paths = sorted(folder.iterdir())
        n = len(paths)
        # ours: the stage's per-image function over all cores, in chunks
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: faiss and numba have started OpenMP threads in this process
        with ProcessPoolExecutor(os.cpu_count(), mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_hash_file, paths[: 2 * (os.cpu_count() or 1)]))  # start-up outside the clock
            t0 = time.perf_counter()
            list(pool.map(_hash_file, paths, chunksize=64))
            ours_rate = n / (time.perf_counter() - t0)
        del hash_bytes
        # imagededup, in its own environment
        if not (IMAGEDEDUP / "tqdm").exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(IMAGEDEDUP),
                            "imagededup==0.3.3.post2", "tqdm"], check=True)
        code = ("import sys, time; from imagededup.methods import PHash; p = PHash(verbose=False); "
                "t0 = time.perf_counter(); e = p.encode_images(image_dir=sys.argv[1]); "
                "print(len(e), time.perf_counter() - t0)")
        env = {**os.environ, "PYTHONPATH": str(IMAGEDEDUP)}
        out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env,
                             check=True)
        count, seconds = out.stdout.split()
        assert int(count) == n, out.stdout
        theirs_rate = n / float(seconds)
    return ours_rate, theirs_rate


def _hash_file(path: Path) -> object:
    import cv2

    from dedup.hashing import hash_bytes

    cv2.setNumThreads(1)
    return hash_bytes(path.read_bytes(), "phash")[0]


def verify_cost(pairs: int = 2000) -> tuple[float, float]:
    """(ms a pair, share of the near-duplicate pairs that pass) on real 64 px pictures."""
    import cv2

    from dedup.verify import prepare, verify
    from wikifaces.fixtures.samples import random_crops

    crops = [img for img, _ in random_crops(96, 4, seed=3)]
    rng = np.random.default_rng(0)
    work = []
    for k in range(pairs):
        a = crops[int(rng.integers(len(crops)))]
        if k % 2:  # a near-duplicate: shifted, re-toned, smaller
            b = cv2.resize((255 * (a[3:, 2:] / 255.0) ** 1.3).astype(np.uint8), (64, 64), interpolation=cv2.INTER_AREA)
        else:
            b = crops[int(rng.integers(len(crops)))]
        work.append((prepare(cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA)), prepare(b), k % 2))
    t0 = time.perf_counter()
    passed = [verify(a, b).same for a, b, dup in work if dup]
    rest = [verify(a, b).same for a, b, dup in work if not dup]
    ms = (time.perf_counter() - t0) * 1000 / len(work)
    del rest
    return ms, float(np.mean(passed))


def compare(codes: np.ndarray, t: int, d: str) -> dict:
    """Ours on everything, and ours and faiss on the 100k and 300k subsets, at threshold t."""
    path = Path(d) / "codes.npy"
    np.save(path, codes)
    full = ours(path, t)
    small = {}
    for m in (100_000, 300_000):
        np.save(path, codes[:m])
        small[m] = (ours(path, t), faiss_multihash(codes[:m], t))
        assert small[m][0]["pairs"] == small[m][1][1], f"faiss and ours disagree at {m} codes, t={t}"
    f1, f3 = small[100_000][1][0], small[300_000][1][0]
    growth = float(np.log(f3 / f1) / np.log(3))
    return {"t": t, "full": full, "small": small, "growth": growth,
            "faiss_full": f3 * (len(codes) / 300_000) ** growth}


def report_verified(n: int, t: int, alone: dict, v: dict) -> None:
    d = DedupConfig()
    total = v["seconds"] + v["verify_seconds"]
    print(f"default settings at {n:,} codes: phash <= {d.candidate_threshold} ({v['own_seconds']:.1f} s, "
          f"{v['pairs']:,} pairs) and re-framed <= {d.probe_threshold} ({v['seconds'] - v['own_seconds']:.1f} s, "
          f"{v['framed']:,} pairs); {v['candidates']:,} candidates, {v['verified']:,} considered (budget "
          f"{d.max_verified_pairs:,}), of which verification checks {v['fewest_checks']:,} (every check passing: "
          f"the rest already joined) to {v['verified']:,} (every check failing): "
          f"{v['verify_seconds_min'] / 60:.1f}-{v['verify_seconds'] / 60:.1f} min on {os.cpu_count()} cores; "
          f"search peak memory {v['rss_mb']:.0f} MB")
    print(f"hash alone at t={t}: {alone['seconds']:.1f} s, {alone['pairs']:,} pairs")
    print(f"search seconds hash alone: {alone['seconds']:.1f}")
    print(f"search seconds with verification: {total:.0f}")
    print(f"search seconds with verification, every check passing: {v['seconds'] + v['verify_seconds_min']:.0f}")
    print(f"verification ratio to search alone: {total / alone['seconds']:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3_033_042)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--verify-only", action="store_true", help="only the verification cost")
    ap.add_argument("--with-verify-only", action="store_true", help="only the default (verified) settings at --n")
    args = ap.parse_args()
    ms, passed = verify_cost()
    print(f"verification on 64 px pictures: {ms:.2f} ms a pair on one core, {passed:.0%} of edited copies pass; "
          f"a million candidate pairs take {ms * 1e6 / 3.6e6:.1f} h")
    print(f"verify ms per pair: {ms:.2f}")
    if args.verify_only:
        return
    t = DedupConfig().threshold
    codes, planted = synthetic_codes(args.n, 8)  # planted within 8 bits: both thresholds below find some
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "all.npy", codes)
        alone = ours(Path(d) / "all.npy", t)
        verified = with_verification(Path(d) / "all.npy", ms)
        report_verified(args.n, t, alone, verified)
        if args.with_verify_only:
            return
        results = [compare(codes, t, d), compare(codes, 8, d)]
    ours_rate, theirs_rate = hashing_throughput(args.files)
    print(f"codes: {args.n:,} (clustered, {planted:,} planted near-duplicates), cores {os.cpu_count()}")
    print(f"{'search':<58}{'seconds':>10}{'pairs':>12}")
    for r in results:
        tt = r["t"]
        for m, (o, (fs, _)) in r["small"].items():
            print(f"{f'ours, multi-index hashing (numba), {m // 1000}k, t={tt}':<58}{o['seconds']:>10.2f}"
                  f"{o['pairs']:>12,}")
            print(f"{f'faiss IndexBinaryMultiHash 3x21 exact, {m // 1000}k, t={tt}':<58}{fs:>10.2f}"
                  f"{o['pairs']:>12,}")
        full = r["full"]
        print(f"{f'ours, all {args.n:,} (measured), t={tt}':<58}{full['seconds']:>10.1f}{full['pairs']:>12,}")
        label = f"faiss, all {args.n:,} (extrapolated, exponent {r['growth']:.2f}), t={r['t']}"
        print(f"{label:<58}{r['faiss_full']:>10.0f}")
        print(f"peak memory of our search process at t={r['t']}: {full['rss_mb']:.0f} MB")
    print(f"hashing {args.files} 256 px WebP files: ours {ours_rate:.0f}/s, imagededup PHash {theirs_rate:.0f}/s")
    default = results[0]
    print(f"search seconds: {default['full']['seconds']:.1f}")
    print(f"peak memory mb: {default['full']['rss_mb']:.0f}")
    print(f"faiss seconds extrapolated: {default['faiss_full']:.0f}")
    print(f"search seconds at t=8: {results[1]['full']['seconds']:.1f}")
    print(f"faiss seconds extrapolated at t=8: {results[1]['faiss_full']:.0f}")
    print(f"hashing images per second: {ours_rate:.0f}")
    print(f"imagededup images per second: {theirs_rate:.0f}")
    print(f"hashing ratio: {ours_rate / theirs_rate:.2f}")


if __name__ == "__main__":
    main()
