"""Scale rehearsal: how each stage's time, memory and disk grow with the work, for both builds.

faces: stand-in worlds of several sizes (people), through names -> images -> detect -> identity
-> dedup -> publish; lsun: generated LSUN-format LMDBs (WebP at LSUN's sizes, shorter side 256,
with 5 % planted near-duplicates) of several sizes, through lsun-import -> dedup -> publish;
faces-dedup: the faces' dedup alone over generated candidate sets (records; 94,000 stands for the
faces of 100,000 people, whose stages before it take ten hours here). Every
stage runs in its own process through the pipeline's runner (as `wikifaces <stage>` does), with the
stage's defaults; the stand-in runs in this process, asked at local speed (its pace is
execution-only). Per stage: items, items per second, peak memory (the summed RSS of the stage's
process tree, sampled every 0.1 s; and its private part, RSS less shared pages: RSS also counts the
pages of the LMDB files a stage maps and reads, which the kernel can drop at will) and disk
written. Between the smallest and the largest size:
`memory growth ratio` (peak at the largest over peak at the smallest) and `throughput ratio`
(items per second, largest over smallest). LSUN is extrapolated to bedroom's 3,033,042 images with
each stage's rate at the largest size (the search's own growth: bench/dedup_scale.py). names: the
Wikidata dump source over generated dumps of several sizes (humans), the route of a real run.

A rehearsal longer than a sitting survives being cut off: results.json gets each stage's row as it
ends and progress.json the stages in flight's time and peaks every few seconds, and `--resume FOLDER`
finishes the run: stages done are kept, the one cut off runs again and resumes from what it wrote
(images, detect and identity skip their finished items; the others start over), its rate taken
over the items of its last segment (`fetched_now`, `processed_now`, `described_now`) and its peaks
over every segment.

    .venv/bin/python bench/scale.py faces --sizes 1000 10000 [--paper-people 1000000]
    .venv/bin/python bench/scale.py faces --sizes 10000 100000 --resume /big/disk/wikifaces-scale-xxxx
    .venv/bin/python bench/scale.py faces --sizes 10000 100000 --results <work>/results.json --markdown
    .venv/bin/python bench/scale.py lsun --sizes 30000 300000 --work /big/disk
    .venv/bin/python bench/scale.py names --sizes 100000 1000000 --work /big/disk
    .venv/bin/python bench/scale.py faces-dedup --sizes 9400 94000 --work /big/disk
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psutil  # noqa: E402

from wikifaces.core.files import atomic_write_json  # noqa: E402

LSUN_BEDROOM = 3_033_042
FACES_STAGES = ("names", "images", "detect", "identity", "dedup", "publish")
LSUN_STAGES = ("lsun-import", "dedup", "publish")
# the count that is each stage's work (from its receipt's counts)
ITEMS = {"names": "people", "images": "files", "detect": "images", "identity": "faces", "dedup": "records",
         "publish": "records", "lsun-import": "records"}
# the items a run did itself, where a stage resumes (the rate of a resumed stage is over these)
ITEMS_NOW = {"images": "fetched_now", "detect": "processed_now", "identity": "described_now"}
_STAGE = """
import json, sys
from wikifaces.pipeline import run_stage
r = run_stage(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], progress=False, force=sys.argv[4] == "force")
print("COUNTS " + json.dumps(r.counts, default=str))
"""


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class Ledger:
    """A run's record in its work folder: results.json (rows of the stages done, written as each
    ends) and progress.json (each stage begun and not finished: its time and peaks every few
    seconds and the segments of it that were cut off; the stand-in's port per size), so
    `--resume` can finish it, whichever stages' rows were removed to be measured again."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.results: dict[str, list[dict]] = _read_json(work / "results.json", {})
        self.progress: dict = _read_json(work / "progress.json", {"ports": {}, "stages": {}})
        self._key: str | None = None

    def done(self, size: int, stage: str) -> dict | None:
        return next((r for r in self.results.get(str(size), []) if r["stage"] == stage), None)

    def cut_off(self, size: int, stage: str) -> list[dict]:
        """The segments of this stage that earlier runs began and did not finish."""
        p = self.progress["stages"].get(f"{size}:{stage}")
        return [*p["segments"], *([p["current"]] if p.get("current") else [])] if p else []

    def begin(self, size: int, stage: str, segments: list[dict]) -> None:
        self._key = f"{size}:{stage}"
        self.progress["stages"][self._key] = {"segments": segments, "current": None}
        self._save_progress()

    def in_flight(self, segment: dict) -> None:
        self.progress["stages"][self._key]["current"] = segment
        self._save_progress()

    def record(self, size: int, row: dict) -> None:
        rows = [r for r in self.results.get(str(size), []) if r["stage"] != row["stage"]]
        order = {s: i for i, s in enumerate((*FACES_STAGES, *LSUN_STAGES))}
        self.results[str(size)] = sorted([*rows, row], key=lambda r: order.get(r["stage"], 99))
        atomic_write_json(self.work / "results.json", self.results)
        self.progress["stages"].pop(f"{size}:{row['stage']}", None)
        self._save_progress()

    def port(self, size: int) -> int:
        return int(self.progress["ports"].get(str(size), 0))

    def set_port(self, size: int, port: int) -> None:
        self.progress["ports"][str(size)] = port
        self._save_progress()

    def _save_progress(self) -> None:
        atomic_write_json(self.work / "progress.json", self.progress)


def _read_json(path: Path, default: object):
    return json.loads(path.read_text()) if path.exists() else default


def run_stage(name: str, config: dict, root: Path, ledger: Ledger | None = None, size: int = 0) -> dict:
    """One stage in its own process: seconds, peak RSS of its process tree, counts, disk written.
    With a ledger: a row already there is returned as it is; a stage that an earlier run began and
    did not finish runs again (it resumes) and its row covers every segment."""
    if ledger is not None and (row := ledger.done(size, name)):
        return row
    earlier = ledger.cut_off(size, name) if ledger is not None else []
    before = earlier[0]["disk_before"] if earlier else disk_bytes(root)
    if ledger is not None:
        ledger.begin(size, name, earlier)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # output to files, not pipes: a stage that writes more than a pipe holds would block while we poll
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        # forced unless it resumes a segment cut off: a stage the runner finds up to date would measure nothing
        proc = subprocess.Popen([sys.executable, "-c", _STAGE, name, json.dumps(config), str(root),
                                 "resume" if earlier else "force"],
                                stdout=out_f, stderr=err_f, text=True, env=env)
        peak = private = 0
        top = psutil.Process(proc.pid)
        noted = t0
        while proc.poll() is None:
            try:
                infos = [p.memory_info() for p in [top, *top.children(recursive=True)] if p.is_running()]
                peak = max(peak, sum(m.rss for m in infos))
                private = max(private, sum(m.rss - m.shared for m in infos))
            except psutil.Error:
                pass
            if ledger is not None and time.perf_counter() - noted > 5:
                noted = time.perf_counter()
                ledger.in_flight({"seconds": noted - t0, "peak_mib": peak / 2**20, "private_mib": private / 2**20,
                                  "disk_before": before})
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        out_f.seek(0), err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{err[-3000:]}")
    counts = json.loads(next(line for line in out.splitlines() if line.startswith("COUNTS "))[7:])
    items = _items(name, counts)
    now = counts.get(ITEMS_NOW.get(name, ""), items)
    row = {"stage": name, "seconds": seconds, "peak_mib": max([peak / 2**20, *(e["peak_mib"] for e in earlier)]),
           "private_mib": max([private / 2**20, *(e["private_mib"] for e in earlier)]), "items": items,
           "rate": now / seconds if seconds else 0.0, "disk_mib": (disk_bytes(root) - before) / 2**20,
           "counts": counts}
    if earlier:
        row["cut_off_segments"] = earlier
        row["items_last_segment"] = now
    if ledger is not None:
        ledger.record(size, row)
    return row


def total_seconds(row: dict) -> float:
    """A stage's time over all of its sittings (the last one's alone is `seconds`)."""
    return row["seconds"] + sum(s["seconds"] for s in row.get("cut_off_segments", []))


def overall_rate(row: dict) -> float:
    """Items a second over every segment of a stage: a run cut off and resumed pays each resume's
    start-up, and its last segment alone may be a short tail that mostly measures that start-up."""
    seconds = total_seconds(row)
    return row["items"] / seconds if "cut_off_segments" in row and seconds else row["rate"]


def _items(name: str, counts: dict) -> int:
    value = counts.get(ITEMS.get(name, ""))
    if isinstance(value, dict):
        value = sum(v for v in value.values() if isinstance(v, int))
    if isinstance(value, int):
        return value
    return next((v for v in counts.values() if isinstance(v, int)), 0)


# -- faces ------------------------------------------------------------------------------------------------
def faces_size(people: int, work: Path, ledger: Ledger, until: str = FACES_STAGES[-1]) -> list[dict]:
    from scraping.config import ImagesConfig, NamesConfig
    from wikifaces.fixtures.standin import StandinServer, build_corpus
    from wikifaces.pipeline import STAGES

    root = work / f"faces-{people}"
    rows = []
    corpus = build_corpus(people, all_photos=True)
    try:  # a resumed run asks the port the stand-in had (the stages' state does not depend on it)
        server = StandinServer(corpus, port=ledger.port(people), log_limit=1000)  # nothing here reads it
    except OSError:
        server = StandinServer(corpus, port=0, log_limit=1000)
    ledger.set_port(people, int(server.host.rsplit(":", 1)[1]))
    with server:
        http = {**server.endpoints(), "contact": "wikifaces scale rehearsal (offline)",
                "api_requests_per_second": 50.0, "download_bytes_per_second": 100_000_000}
        names = NamesConfig(categories=("Stand-in people",), category_depth=2)
        configs = {
            "names": names.model_copy(update={"http": names.http.model_copy(update=http)}),
            "images": ImagesConfig().model_copy(update={"http": ImagesConfig().http.model_copy(update=http)}),
        }
        for stage in FACES_STAGES[: FACES_STAGES.index(until) + 1]:
            config = configs.get(stage) or STAGES[stage].config()
            if stage == "dedup":
                config = STAGES[stage].config(source="faces")
            rows.append(run_stage(stage, config.model_dump(mode="json"), root, ledger, people))
            print(_row(people, rows[-1]), flush=True)
    images = rows[FACES_STAGES.index("images")] if len(rows) > 1 else None
    if images is not None and "files" not in images:
        images["files"] = _downloaded(root / "raw" / "wikipedia" / "images.jsonl")
        ledger.record(people, images)
    return rows


def _downloaded(images_jsonl: Path) -> dict:
    """Bytes and pixels of the files the images stage downloaded (status ok)."""
    rows = [json.loads(line) for line in images_jsonl.read_text().splitlines() if line.strip()]
    ok = [r for r in rows if r.get("status") == "ok" and r.get("bytes") and r.get("width")]
    aspects = sorted(r["height"] / r["width"] for r in ok)
    return {"files": len(ok), "bytes": sum(r["bytes"] for r in ok),
            "pixels": sum(r["width"] * r["height"] for r in ok),
            "median_aspect": aspects[len(aspects) // 2] if aspects else 1.0}


# -- names from a Wikidata dump ----------------------------------------------------------------------------
def names_size(n: int, work: Path, sources: Path, ledger: Ledger) -> list[dict]:
    """`names --source wikidata-dump` over a generated dump of n humans (realistic entities; about
    two in three have an image, a Commons category or an article and are kept). Page ids are not
    asked (the paper counts those requests); the dump is kept in --work for reruns."""
    from scraping.config import NamesConfig
    from wikifaces.fixtures.wikidata import dump_entities, write_dump

    dump = sources / f"wikidata-humans-{n}.json"
    if dump.exists():
        print(f"reusing the generated dump {dump}", flush=True)
    else:
        t0 = time.perf_counter()
        write_dump(dump, dump_entities(None, fillers=n, human_share=1.0))
        print(f"generated {n:,} entities in {time.perf_counter() - t0:.0f} s ({dump.stat().st_size / 2**20:,.0f} MiB)",
              flush=True)
    names = NamesConfig(source="wikidata-dump", dump_file=dump, resolve_pages=False)
    config = names.model_copy(update={"http": names.http.model_copy(update={"contact": "scale rehearsal (offline)"})})
    row = run_stage("names", config.model_dump(mode="json"), work / f"names-{n}", ledger, n)
    print(_row(n, row), flush=True)
    return [row]


# -- LSUN -------------------------------------------------------------------------------------------------
def _lsun_chunk(args: tuple[int, int, int]) -> list[tuple[bytes, bytes]]:
    """Records start..stop of a generated LSUN release: WebP, shorter side 256, random views of the
    packaged photographs (crop, flip, brightness), 5 % near-duplicates of an earlier record of the chunk."""
    import cv2
    import numpy as np

    from wikifaces.fixtures.lsun import _perturb, _random_view
    from wikifaces.fixtures.samples import available_photos, load_rgb

    start, stop, seed = args
    rng = random.Random(seed * 1_000_003 + start)
    photos = _photos(available_photos, load_rgb)
    out, made = [], []
    for i in range(start, stop):
        if made and rng.random() < 0.05:
            img = _perturb(rng.choice(made), rng)
        else:
            img = _random_view(rng.choice(photos), 256, rng)
            if rng.random() < 0.5:  # LSUN's longer sides vary
                h, w = img.shape[:2]
                img = cv2.resize(img, (int(w * rng.uniform(1.0, 1.6)), h), interpolation=cv2.INTER_AREA)
            made = [*made, img][-50:]
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_WEBP_QUALITY, 75])
        assert ok
        out.append((hashlib.sha1(f"{seed}-{i}".encode()).hexdigest().encode(), buf.tobytes()))
    return out


_PHOTOS: list = []


def _photos(available, load) -> list:
    if not _PHOTOS:
        _PHOTOS.extend(load(p) for _, p in available(demo_only=False))
    return _PHOTOS


def write_lsun(out: Path, n: int, seed: int = 0) -> float:
    """A generated LSUN-format LMDB of n records (all cores); returns seconds."""
    import lmdb

    t0 = time.perf_counter()
    out.mkdir(parents=True)
    env = lmdb.open(str(out), map_size=n * 40_000 + (1 << 28), subdir=True, sync=False)
    step = 2000
    with ProcessPoolExecutor() as pool:
        for chunk in pool.map(_lsun_chunk, [(a, min(a + step, n), seed) for a in range(0, n, step)]):
            with env.begin(write=True) as txn:
                for key, value in chunk:
                    txn.put(key, value)
    env.sync(True)
    env.close()
    return time.perf_counter() - t0


def lsun_records(path: Path) -> int:
    """Records of a generated LSUN LMDB, 0 when there is none."""
    import lmdb

    if not (path / "data.mdb").exists():
        return 0
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


def lsun_size(n: int, work: Path, sources: Path, ledger: Ledger) -> list[dict]:
    from dedup.config import DedupConfig, LsunImportConfig
    from wikifaces.pipeline import STAGES
    from wikifaces.publish import PublishConfig

    source = sources / f"lsun-source-{n}"
    if lsun_records(source) == n:  # generated by an earlier run (generation takes longer than the build)
        print(f"reusing {n:,} generated WebP records in {source}", flush=True)
    else:
        shutil.rmtree(source, ignore_errors=True)
        seconds = write_lsun(source, n)
        print(f"generated {n:,} WebP records in {seconds:.0f} s ({disk_bytes(source) / 2**20:,.0f} MiB)", flush=True)
    root = work / f"lsun-{n}"
    configs = {"lsun-import": LsunImportConfig(source=source),
               # build-lsun's dedup: hashes alone (verifying millions of pairs does not fit this machine)
               "dedup": STAGES["dedup"].config(source="lsun", dedup=DedupConfig(verify=False)),
               "publish": PublishConfig(dataset="lsun-bedroom-64", source="lsun")}
    rows = []
    for stage in LSUN_STAGES:
        rows.append(run_stage(stage, configs[stage].model_dump(mode="json"), root, ledger, n))
        print(_row(n, rows[-1]), flush=True)
    return rows


# -- faces' dedup at the size of 100,000 people ---------------------------------------------------------------
def write_face_candidates(out: Path, n: int, seed: int = 7) -> float:
    """A candidate set shaped like the faces' (128 px PNG crops): the packaged photographs, each in
    many slight edits (a shifted crop of 240-256 px of 264, brightness within 10 %, JPEG at quality
    40-95), record k from photograph k mod 138: dense clusters that grow with the set, as the
    stand-in's do. Returns seconds."""
    import cv2
    import numpy as np

    from shards import ShardWriter
    from wikifaces.core.imaging import centre_square
    from wikifaces.fixtures.samples import available_photos, load_rgb

    t0 = time.perf_counter()
    photos = [centre_square(img, 264) for img in _photos(available_photos, load_rgb)]
    rng = np.random.default_rng(seed)
    with ShardWriter(out, name="face-candidates", image_size=(128, 128), encoding="png") as writer:
        for k in range(n):
            y, x = rng.integers(0, 9, 2)
            side = int(rng.integers(240, 256))
            crop = np.clip(photos[k % len(photos)][y : y + side, x : x + side] * rng.uniform(0.9, 1.1), 0, 255)
            _, jpeg = cv2.imencode(".jpg", crop.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
            face = cv2.resize(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED), (128, 128), interpolation=cv2.INTER_AREA)
            writer.add(face, {"key": f"face-{k:07d}", "person": f"Q{k % 5000}"})
    return time.perf_counter() - t0


def faces_dedup_size(n: int, work: Path, sources: Path, ledger: Ledger) -> list[dict]:
    """The faces' dedup stage (verification on, its defaults) over a generated candidate set of n
    records: the 100,000-people rehearsal's dedup (~94,000 faces) without the ten hours of the
    stages before it. The set is kept in --work for reruns."""
    from shards import is_complete

    source = sources / f"face-candidates-{n}"
    if is_complete(source):
        print(f"reusing {n:,} generated candidates in {source}", flush=True)
    else:
        shutil.rmtree(source, ignore_errors=True)
        seconds = write_face_candidates(source, n)
        print(f"generated {n:,} candidates in {seconds:.0f} s ({disk_bytes(source) / 2**20:,.0f} MiB)", flush=True)
    row = run_stage("dedup", {"dataset": str(source)}, work / f"faces-dedup-{n}", ledger, n)
    if "outputs_mib" not in row:  # its outputs go beside the set (`dedup.stage.default_out_dir`), not the root
        row["outputs_mib"] = disk_bytes(source.with_name(source.name + "-dedup")) / 2**20
        row["disk_mib"] += row["outputs_mib"]
        ledger.record(n, row)
    print(_row(n, row), flush=True)
    return [row]


# -- the real run, on paper ---------------------------------------------------------------------------------
SPREADS = {"names": "no: one polite client (or one dump reader)", "images": "no: one polite client",
           "detect": "yes: image batches", "identity": "yes: descriptor batches",
           "dedup": "hashing yes; the search no", "publish": "no: one writer"}


def paper(rows: list[dict], people: int) -> None:
    """A full Wikidata run at Wikimedia's limits, from this rehearsal's funnel and its measured rates.

    Per person, the rehearsal's API requests and downloaded files; per downloaded file, its bytes
    per pixel at a 960 px thumbnail of the median aspect (the stand-in serves files narrower than
    that as they are; Commons portraits mostly are wider); per image, face and record, the rates
    and disk of this machine. Only `people` is an assumption: set it with --paper-people. Dedup's
    share removed is not carried over: the stand-in draws its files from about a hundred
    photographs, so most of its faces are near-duplicates of one another, which Commons' are not;
    the published count is given as at most the identity-checked faces."""
    from scraping.config import HttpConfig, ImagesConfig

    http, width = HttpConfig(), ImagesConfig().thumb_width
    by = {r["stage"]: r for r in rows}
    c = {k: v["counts"] for k, v in by.items()}
    n = c["names"]["people"]
    files = by["images"]["files"]
    # a resumed images stage counts the requests of its last sitting, made for the rows it listed then
    listed = c["images"].get("fetched_now") or c["images"]["files"]
    per_person = {"requests": c["images"]["api_requests"] / listed * c["images"]["files"] / n,
                  "files": files["files"] / n}
    thumb_bytes = files["bytes"] / files["pixels"] * width * width * files["median_aspect"]
    scale = people / n
    items = {"names": people, "images": round(files["files"] * scale), "detect": round(c["detect"]["images"] * scale),
             "identity": round(c["identity"]["faces"] * scale), "dedup": round(c["identity"]["kept"] * scale),
             "publish": round(c["identity"]["kept"] * scale)}
    page_ids = people / 50  # names: the page ids of the people a Wikidata source found, 50 a request
    requests = people * per_person["requests"]  # images: listings and imageinfo
    download_bytes = items["images"] * thumb_bytes
    # images: the next chunk of people is listed while one downloads, so the longer of the two
    hours = {"names": page_ids / http.api_requests_per_second / 3600,
             "images": max(requests / http.api_requests_per_second,
                           download_bytes / http.download_bytes_per_second) / 3600}
    compute = ("detect", "identity", "dedup", "publish")
    for stage in compute:
        hours[stage] = items[stage] / overall_rate(by[stage]) / 3600
    per_item = {s: by[s]["disk_mib"] * 2**20 / max(by[s]["items"], 1) for s in compute}
    disk = download_bytes + sum(per_item[s] * items[s] for s in per_item)
    print(f"\nthe real run on paper: {people:,} people (rehearsal's funnel from {n:,} stand-in people), "
          f"API {http.api_requests_per_second:g} requests/s, downloads {http.download_bytes_per_second * 8 / 1e6:g} "
          f"Mbit/s, {width} px thumbnails ({thumb_bytes / 1e3:,.0f} kB each at the rehearsal's bytes per pixel)")
    print(f"{'stage':<10}{'items':>14}{'hours here':>12}  spreads over a Dask cluster")
    for stage in FACES_STAGES:
        print(f"{stage:<10}{items[stage]:>14,}{hours[stage]:>12.1f}  {SPREADS[stage]}")
    print(f"api requests per person: {per_person['requests']:.2f}")
    print(f"files per person: {per_person['files']:.2f}")
    print(f"real run api requests: {requests + page_ids:,.0f}")
    print(f"real run api hours: {(requests + page_ids) / http.api_requests_per_second / 3600:.0f}")
    print(f"real run download hours: {download_bytes / http.download_bytes_per_second / 3600:.0f}")
    print(f"real run download GB: {download_bytes / 1e9:.0f}")
    polite = hours["names"] + hours["images"]
    print(f"real run polite hours (names + images, bound by Wikimedia's limits): {polite:.0f}")
    print(f"real run compute hours on this machine (detect, identity, dedup, publish): "
          f"{sum(hours[s] for s in compute):.0f}")
    print(f"real run disk GB: {disk / 1e9:.0f}")
    print(f"funnel per person: files {items['images'] / people:.2f}, faces {items['identity'] / people:.2f}, "
          f"identity-checked {items['dedup'] / people:.2f} (dedup removed {c['dedup']['removed'] / n:.2f} a person "
          "on the stand-in, whose files come from about a hundred photographs: not carried over)")
    print(f"real run published faces (at most): {items['publish']:,}")
    if by["publish"]["items"] < 1000:  # the stand-in's dedup leaves a few dozen: start-up bound
        pub = by["publish"]
        print(f"note: publish's rate comes from {pub['items']:,} records in {pub['seconds']:.1f} s, mostly start-up: "
              "its hours are an upper bound (bench/scale.py lsun measures publish at scale)")


# -- report -------------------------------------------------------------------------------------------------
def markdown(results: dict[int, list[dict]]) -> str:
    """The README's table of a rehearsal: each stage at the largest size, its rate, peaks and growth
    against the smallest (a stage not yet done at the largest size is left out); rates over all of a
    stage's sittings."""
    sizes = sorted(results)
    small = {r["stage"]: r for r in results[sizes[0]]}
    lines = [f"| stage | items at {sizes[-1]:,} | items/s ({sizes[0]:,} -> {sizes[-1]:,}) | peak RSS MiB | private MiB "
             "| memory growth (RSS / private) | throughput ratio |", "|---|---|---|---|---|---|---|"]
    for b in results[sizes[-1]]:
        a = small.get(b["stage"])
        if a is None:
            continue
        lines.append(
            f"| {b['stage']} | {b['items']:,} {ITEMS.get(b['stage'], 'items')} "
            f"| {overall_rate(a):,.1f} -> {overall_rate(b):,.1f} "
            f"| {a['peak_mib']:,.0f} -> {b['peak_mib']:,.0f} | {a['private_mib']:,.0f} -> {b['private_mib']:,.0f} "
            f"| {b['peak_mib'] / max(a['peak_mib'], 1e-9):.2f} / {b['private_mib'] / max(a['private_mib'], 1e-9):.2f} "
            f"| {overall_rate(b) / max(overall_rate(a), 1e-9):.2f} |")
    return "\n".join(lines)


def _row(size: int, r: dict) -> str:
    segments = r.get("cut_off_segments", [])
    line = (f"{size:>9,} {r['stage']:<12}{r['items']:>10,}{total_seconds(r):>9.1f}{overall_rate(r):>10.1f}"
            f"{r['peak_mib']:>10.0f}{r['private_mib']:>13.0f}{r['disk_mib']:>10.1f}")
    if segments:
        line += (f"  ({len(segments) + 1} sittings; the last {r['seconds']:.0f} s, "
                 f"{r['rate']:.1f}/s over its {r['items_last_segment']:,} items)")
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", choices=("faces", "lsun", "names", "faces-dedup"))
    ap.add_argument("--sizes", type=int, nargs="+",
                    help="people (faces), images (lsun), humans in the dump (names) or candidate records (faces-dedup)")
    ap.add_argument("--until", choices=FACES_STAGES, default=FACES_STAGES[-1],
                    help="faces: run the stages up to this one (the rest need it)")
    ap.add_argument("--results", type=Path, default=None,
                    help="report from an earlier run's results.json instead of running the builds")
    ap.add_argument("--paper-people", type=int, default=1_000_000,
                    help="people of the full run worked out on paper from the faces rehearsal")
    ap.add_argument("--work", type=Path, default=None,
                    help="where the data roots go (default: a temporary folder); generated LSUN sources are kept "
                         "there and reused")
    ap.add_argument("--markdown", action="store_true", help="also print the README's table of the rows")
    ap.add_argument("--resume", type=Path, default=None,
                    help="finish the run in this work folder (one an earlier run made and was cut off): stages "
                         "done are kept, the one cut off resumes")
    args = ap.parse_args()
    if not args.sizes and not args.results:
        ap.error("give --sizes (to run) or --results (to report from an earlier run)")
    if args.resume and (args.work or args.results):
        ap.error("--resume names the work folder itself: give it without --work or --results")
    if args.resume and not args.resume.is_dir():
        ap.error(f"--resume: {args.resume} is not a folder")
    print(f"{'size':>9} {'stage':<12}{'items':>10}{'seconds':>9}{'items/s':>10}{'peak MiB':>10}{'private MiB':>13}"
          f"{'disk MiB':>10}")
    if args.results:
        work = args.results.parent
        results = {int(k): v for k, v in json.loads(args.results.read_text()).items()}
        for n, rows in results.items():
            for r in rows:
                print(_row(n, r))
    else:
        work = args.resume or Path(tempfile.mkdtemp(prefix="wikifaces-scale-", dir=args.work))
        sources = work.parent if args.resume or args.work else work  # generated sources outlive a run's folder
        ledger = Ledger(work)
        print(f"work folder: {work} (results.json, progress.json: --resume {work} finishes a run cut off)", flush=True)
        build = {"faces": lambda n: faces_size(n, work, ledger, args.until),
                 "lsun": lambda n: lsun_size(n, work, sources, ledger),
                 "names": lambda n: names_size(n, work, sources, ledger),
                 "faces-dedup": lambda n: faces_dedup_size(n, work, sources, ledger)}[args.build]
        results = {n: build(n) for n in sorted(args.sizes)}
    if args.sizes:
        results = {n: results[n] for n in sorted(args.sizes) if n in results}
    sizes = sorted(results)
    small, large = results[sizes[0]], results[sizes[-1]]
    done = {r["stage"]: r for r in large}  # a run cut off, or in flight, has fewer rows at its larger size
    for a, b in ((a, done[a["stage"]]) for a in small if a["stage"] in done):
        print(f"memory growth ratio {a['stage']}: {b['peak_mib'] / max(a['peak_mib'], 1e-9):.2f}")
        print(f"private memory growth ratio {a['stage']}: {b['private_mib'] / max(a['private_mib'], 1e-9):.2f}")
        print(f"throughput ratio {a['stage']}: {overall_rate(b) / max(overall_rate(a), 1e-9):.2f}")
    print(f"work ratio: {sizes[-1] / sizes[0]:.0f}")
    if args.markdown and len(sizes) > 1:
        print(markdown(results))
    if args.build == "lsun":
        hours = sum(LSUN_BEDROOM / overall_rate(r) for r in large if r["rate"]) / 3600
        print(f"lsun build hours at {LSUN_BEDROOM} (extrapolated): {hours:.2f}")
    if args.build == "faces" and len(large) == len(FACES_STAGES):
        paper(large, args.paper_people)
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
