"""Dedup's candidate pairs when near-duplicate clusters are dense: how the search's pairs and
memory grow when every cluster grows.

A real hash file (the `hashes-<method>.npz` a dedup run left in its output folder, e.g. the faces
rehearsal's at 10,000 people, whose 9,435 faces fall into 28 clusters) is replicated R times, each
copy's codes and re-framed codes with up to two bits flipped, so each cluster is R times larger;
then the stage's pair search (`dedup.stage._links`: codes within the candidate radius, and the
re-framed copies' pairs) runs in a fresh process per R, whose peak RSS is its own. Pairs grow
with R squared where clusters are dense: this is what the faces rehearsal's dedup meets at
100,000 people (the stand-in draws its files from about a hundred photographs). `kept`: the
pairs the search hands to verification (at most `max_verified_pairs` of each kind).

    .venv/bin/python bench/dedup_clusters.py HASHES.npz [--copies 1 3 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_RUN = """
import json, resource, sys, time
import numpy as np
from dedup.config import DedupConfig
from dedup.hashing import OK, Hashes
from dedup.stage import _links

h, copies = Hashes.load(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)

def flipped(a):
    a = a.copy()
    for _ in range(2):  # up to two bits of each code
        bits = rng.integers(0, 64, a.shape).astype(np.uint64)
        m = rng.random(a.shape) < 0.5
        a[m] ^= np.uint64(1) << bits[m]
    return a

def tagged(a, i):
    return np.char.add(a, str(i).encode()).astype("S16") if i else a

big = h if copies == 1 else Hashes(
    codes=np.concatenate([flipped(h.codes) for _ in range(copies)]), pixels=np.tile(h.pixels, copies),
    status=np.tile(h.status, copies), sha_bytes=np.concatenate([tagged(h.sha_bytes, i) for i in range(copies)]),
    sha_pixels=np.concatenate([tagged(h.sha_pixels, i) for i in range(copies)]), method=h.method,
    probes=None if h.probes is None else np.concatenate([flipped(h.probes) for _ in range(copies)]))
t0 = time.perf_counter()
links = _links(DedupConfig(), big, big.status == OK)
print(json.dumps({"records": len(big), "same_code": len(links.same_code), "near": links.near_total,
                  "framed": links.framed_total, "kept": len(links.near) + len(links.framed),
                  "seconds": time.perf_counter() - t0,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hashes", type=Path, help="a dedup output folder's hashes-<method>.npz")
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 3, 10])
    args = ap.parse_args()
    if not args.hashes.is_file():
        ap.error(f"{args.hashes} is not a file")
    root = str(Path(__file__).resolve().parent.parent)
    rows = {}
    print(f"{'copies':>7}{'records':>10}{'pairs':>13}{'(near':>12}{'framed)':>11}{'kept':>11}{'seconds':>9}"
          f"{'peak MiB':>10}")
    for r in sorted(args.copies):
        out = subprocess.run([sys.executable, "-c", _RUN, str(args.hashes), str(r)], capture_output=True, text=True,
                             env={"PYTHONPATH": root, "PATH": ""}, check=True)
        row = rows[r] = json.loads(out.stdout.strip().splitlines()[-1])
        pairs = row["same_code"] + row["near"] + row["framed"]
        print(f"{r:>7}{row['records']:>10,}{pairs:>13,}{row['near']:>12,}{row['framed']:>11,}{row['kept']:>11,}"
              f"{row['seconds']:>9.1f}{row['peak_mib']:>10,.0f}", flush=True)
    lo, hi = rows[min(rows)], rows[max(rows)]
    pairs = {k: v["same_code"] + v["near"] + v["framed"] for k, v in ((min(rows), lo), (max(rows), hi))}
    print(f"record ratio: {hi['records'] / lo['records']:.0f}")
    print(f"candidate pair ratio: {pairs[max(rows)] / max(pairs[min(rows)], 1):.0f}")
    print(f"search peak memory ratio: {hi['peak_mib'] / lo['peak_mib']:.1f}")
    print(f"search peak MiB at {max(rows)} copies: {hi['peak_mib']:.0f}")


if __name__ == "__main__":
    main()
