"""Reading Wikidata's JSON dump: our `wikidata-dump` source against decompression alone.

Side by side in one run, on one generated dump of realistic entities (statements with ids, ranks,
qualifiers and references, labels in many languages, sitelinks; ~10% humans, the rest scholarly
articles, taxa and places, as in the real dump):
  * ours: the names stage's dump reader (decompress, byte-test every line, decode humans, filter);
  * decompression alone, in-process with ISA-L (the fastest here) and with zlib, and `zcat` to
    /dev/null: the floor our reader is held to;
  * the same for the .bz2 dump (indexed_bzip2, parallel) against `bz2` alone, with --bz2.
Every figure is the best of --repeats runs (the machine is shared; the best is the least disturbed).

    .venv/bin/python bench/wikidata_dump.py [--entities 60000] [--repeats 5] [--bz2]
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# keep bench/ off the import path (its files are named like the packages they measure)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from scraping.config import NamesConfig  # noqa: E402
from scraping.dump import forget_dump, read_dump  # noqa: E402
from wikifaces.fixtures.wikidata import dump_entities, write_dump  # noqa: E402

FULL_DUMP_GB = 141  # latest-all.json.gz, 2025-26


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def drain(opener: Callable[[], object]) -> Callable[[], int]:
    def run() -> int:
        n = 0
        with opener() as fh:  # type: ignore[attr-defined]
            while chunk := fh.read(1 << 20):
                n += len(chunk)
        return n
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=60_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bz2", action="store_true", help="also measure the .bz2 dump")
    args = ap.parse_args()

    work = Path(tempfile.gettempdir()) / "wikifaces-bench-dump"
    work.mkdir(exist_ok=True)
    gz = work / f"dump-{args.entities}.json.gz"
    if not gz.exists():
        t = time.perf_counter()
        write_dump(gz, dump_entities(None, args.entities, seed=1))
        print(f"generated {gz} in {time.perf_counter() - t:.0f} s")
    from isal import igzip

    size = gz.stat().st_size
    raw = drain(lambda: igzip.open(gz))()
    humans = sum(1 for line in drain_lines(gz) if b'"id":"Q5"},"type":"wikibase-entityid"' in line)
    out = Path(tempfile.mkdtemp(prefix="wikifaces-dump-out-"))
    config = NamesConfig(source="wikidata-dump", dump_file=gz)
    found: list[int] = []

    def ours() -> None:
        forget_dump(out)
        found.append(len(read_dump(config, out, progress=False).rows))

    t_ours = best(ours, args.repeats)
    t_isal = best(drain(lambda: igzip.open(gz)), args.repeats)
    t_zlib = best(drain(lambda: gzip.open(gz)), args.repeats)  # noqa: SIM115 (drain's with closes it)
    t_zcat = best(lambda: subprocess.run(["zcat", str(gz)], stdout=subprocess.DEVNULL, check=True), args.repeats) \
        if shutil.which("zcat") else float("nan")

    mb = size / 1e6
    print(f"dump: {args.entities:,} entities ({humans:,} with a P31=Q5 value), {mb:.1f} MB gz, "
          f"{raw / 1e6:.0f} MB JSON (x{raw / size:.1f}); ours found {found[-1]:,} people")
    print(f"{'reader':<44}{'seconds':>9}{'MB/s gz':>10}{'entities/s':>13}")
    for label, t in (("ours: names --source wikidata-dump", t_ours), ("decompression alone: ISA-L (isal)", t_isal),
                     ("decompression alone: zlib (gzip module)", t_zlib), ("decompression alone: zcat", t_zcat)):
        print(f"{label:<44}{t:>9.3f}{mb / t:>10.1f}{args.entities / t:>13,.0f}")
    if args.bz2:
        bz = work / f"dump-{args.entities}.json.bz2"
        if not bz.exists():
            write_dump(bz, dump_entities(None, args.entities, seed=1))
        bconfig = NamesConfig(source="wikidata-dump", dump_file=bz)

        def ours_bz2() -> None:
            forget_dump(out)
            read_dump(bconfig, out, progress=False)

        import indexed_bzip2

        bmb = bz.stat().st_size / 1e6
        for label, t in (("ours, bz2 (indexed_bzip2)", best(ours_bz2, args.repeats)),
                         ("decompression alone: indexed_bzip2", best(drain(lambda: indexed_bzip2.open(
                             str(bz), parallelization=2)), args.repeats)),
                         ("decompression alone: bz2 module",
                          best(drain(lambda: bz2.open(bz)), args.repeats))):  # noqa: SIM115 (closed by drain)
            print(f"{label:<44}{t:>9.3f}{bmb / t:>10.1f}{args.entities / t:>13,.0f}")
    hours = FULL_DUMP_GB * 1e3 / (mb / t_ours) / 3600
    print(f"full dump ({FULL_DUMP_GB} GB gz) at this rate: {hours:.1f} h (scales with the real dump's expansion "
          f"over this file's x{raw / size:.1f})")
    print(f"dump MB/s (compressed): {mb / t_ours:.1f}")
    print(f"dump entities per second: {args.entities / t_ours:,.0f}")
    print(f"decompression alone MB/s (isal): {mb / t_isal:.1f}")
    print(f"dump ratio vs zcat: {t_zcat / t_ours:.2f}")
    print(f"full dump hours: {hours:.1f}")
    print(f"dump ratio: {t_isal / t_ours:.2f}")


def drain_lines(path: Path):
    from isal import igzip

    with igzip.open(path) as fh:
        yield from fh


if __name__ == "__main__":
    main()
