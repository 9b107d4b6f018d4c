"""The fault matrix: every fault class injected into a full build, and what became of it.

One reference build of the offline stand-in (names -> images -> detect -> dedup -> publish, the
same stage functions the Prefect flows call) without faults; then a build where each network or
body fault hits its own victim (one person's portrait) and transient API faults hit everyone;
then the data-side faults (a damaged shard given to training, an LMDB map that must grow, a
full disk, two builds on one data root, an untrusted checkpoint). For each: the build completes,
the victim carries the expected status and reason, and every other row equals the reference.

    .venv/bin/python bench/faults.py [--people 40]

tests/test_faults.py runs the same matrix and asserts every row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scraping.config import HttpConfig  # noqa: E402
from wikifaces.core.paths import DataRoot  # noqa: E402
from wikifaces.core.tables import read_jsonl  # noqa: E402


@dataclass(frozen=True)
class UploadFault:
    """A fault on one victim's download, and the outcome its images row must show."""

    fault: str  # as the issue names it
    kind: str  # the stand-in's fault kind
    status: str  # expected images.jsonl status ("ok": recovered)
    reason: str = ""  # expected substring of the reason
    times: int | None = None  # None: every request
    retry_after: int | None = None
    delay: float = 0.0
    location: str = ""


UPLOAD_FAULTS = (
    UploadFault("connection refused", "redirect", "http_error", "refused", location="http://{dead}/x.jpg"),
    UploadFault("timeout (no response)", "slow", "http_error", "timeout", delay=5.0),
    UploadFault("slow body", "slow_body", "http_error", "not complete within", delay=8.0),
    UploadFault("truncated body, every time", "truncated", "http_error", ""),
    UploadFault("truncated body, twice", "truncated", "ok", times=2),
    UploadFault("429 with Retry-After", "429", "ok", times=2, retry_after=1),
    UploadFault("429 without Retry-After", "429", "ok", times=2),
    UploadFault("5xx storm (503 x4)", "503", "ok", times=4),
    UploadFault("500 every time", "500", "http_error", "500"),
    UploadFault("redirect outside the allow-list", "redirect", "disallowed_host", "evil.invalid",
                location="http://evil.invalid/steal.jpg"),
    UploadFault("HTML served as an image", "html_as_image", "not_image", ""),
    UploadFault("SVG", "svg", "unsupported", ""),
    UploadFault("decompression bomb", "bomb", "too_large", ""),
    UploadFault("a body over the size cap", "oversized", "too_large", "cap"),
    UploadFault("CMYK JPEG", "cmyk", "ok"),
    UploadFault("EXIF-rotated JPEG", "exif_rotated", "ok"),
    UploadFault("corrupt PNG", "corrupt_png", "corrupt", ""),
    UploadFault("not an image at all", "not_image", "not_image", ""),
)
# (label, kind, endpoint, which requests, hits): each storm on its own kind of request, below max_attempts
API_FAULTS = (("maxlag errors", "maxlag", "api", "categorymembers", 3),
              ("429 storm on the API", "429", "api", "pageprops", 3),
              ("5xx storm on the API", "503", "commons", "imageinfo", 4))


@dataclass
class Outcome:
    fault: str
    expected: str
    got: str
    ok: bool


def http_config(server: Any, dead: str) -> HttpConfig:
    return HttpConfig(**server.endpoints(), contact="wikifaces fault matrix").model_copy(update={
        "allowed_download_hosts": (server.host, dead), "read_timeout": 2.0, "download_deadline": 3.0,
        "max_attempts": 6, "backoff_initial": 0.05, "backoff_max": 1.0, "connect_timeout": 1.0,
        "max_response_bytes": 8_000_000})


def build(root: Path, server: Any, dead: str) -> None:
    """names -> images (lead images: the faults are aimed at them) -> detect -> identity -> dedup ->
    publish on the stand-in (no training: see the data faults)."""
    from faces import DetectConfig
    from faces.config import IdentityConfig
    from scraping.config import ImagesConfig, NamesConfig
    from wikifaces.pipeline import DedupStageConfig, run_stage
    from wikifaces.publish import PublishConfig

    http = http_config(server, dead)
    data = DataRoot(root)
    # a names file too: a redirect loop and a disambiguation page are found by name, not in categories
    extra = root.parent / "names.txt"
    if not extra.exists():
        extra.write_text("Loop Alpha\nJohn Smith\n")
    run_stage("names", NamesConfig(categories=("Stand-in people",), category_depth=2, names_file=extra, http=http),
              data, progress=False)
    run_stage("images", ImagesConfig(http=http, max_images_per_person=1), data, progress=False)
    run_stage("detect", DetectConfig(), data, progress=False)
    run_stage("identity", IdentityConfig(), data, progress=False)
    run_stage("dedup", DedupStageConfig(), data, progress=False)
    run_stage("publish", PublishConfig(), data, progress=False)


def _rows(path: Path, key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: {k: v for k, v in r.items() if k not in ("seconds", "fetched")} for r in read_jsonl(path)}


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def victims(corpus: Any, n: int) -> list[Any]:
    """People with their own free portrait (not shared, not the hostile ones)."""
    from wikifaces.fixtures.standin.corpus import HOSTILE_TITLE

    shared = {p.image for p in corpus.people if sum(q.image == p.image for q in corpus.people) > 1}
    picks = [p for p in corpus.people if p.image and p.image not in shared and not corpus.files[p.image].nonfree
             and p.title != HOSTILE_TITLE and "<" not in corpus.files[p.image].licence]
    if len(picks) < n:
        raise ValueError(f"the stand-in has {len(picks)} possible victims, {n} needed: use more people")
    return picks[:n]


def network_matrix(work: Path, people: int = 40) -> list[Outcome]:
    """The reference build and the faulted build; one outcome per fault (and one for the rest)."""
    from wikifaces.fixtures.standin import StandinServer, build_corpus

    corpus = build_corpus(people, all_photos=True)
    dead = _dead_address()
    out: list[Outcome] = []
    with StandinServer(corpus) as server:
        build(work / "reference", server, dead)
        chosen = victims(corpus, len(UPLOAD_FAULTS))
        for f, victim in zip(UPLOAD_FAULTS, chosen, strict=True):
            server.add_fault(f.kind, endpoint="upload", match=quote(victim.image), times=f.times,
                             retry_after=f.retry_after, delay=f.delay, location=f.location.format(dead=dead))
        for _, kind, endpoint, match, times in API_FAULTS:
            server.add_fault(kind, endpoint=endpoint, match=match, times=times,
                             retry_after=1 if kind != "503" else None)
        build(work / "faulted", server, dead)
        api_hits = {kind: sum(1 for e in server.log if e.fault == kind and e.endpoint == endpoint)
                    for _, kind, endpoint, _, _ in API_FAULTS}
    ref = _rows(work / "reference/raw/wikipedia/images.jsonl", "title")
    got = _rows(work / "faulted/raw/wikipedia/images.jsonl", "title")
    for f, victim in zip(UPLOAD_FAULTS, chosen, strict=True):
        row = got.get(victim.title, {})
        status, reason = row.get("status"), row.get("reason") or ""
        good = status == f.status and f.reason.lower() in reason.lower() and (status != "ok" or bool(row.get("sha256")))
        if status != "ok":
            good = good and bool(reason) and row.get("sha256") is None
        out.append(Outcome(f.fault, f"{f.status}" + (f" ({f.reason})" if f.reason else ""),
                           f"{status}: {reason[:70]}" if reason else f"{status}", good))
    for label, kind, _, _, times in API_FAULTS:
        out.append(Outcome(label, f"retried ({times} hits), build completes", f"{api_hits[kind]} hits",
                           api_hits[kind] == times))
    hit = {v.title for v in chosen}
    others_same = all(got.get(t) == r for t, r in ref.items() if t not in hit)
    out.append(Outcome("everyone else", "rows equal the reference build", "equal" if others_same else "DIFFERENT",
                       others_same and len(got) == len(ref)))
    # the corpus's own awkward cases, in the reference build
    rejected = {r["input"]: r for r in read_jsonl(work / "reference/raw/wikipedia/names-rejected.jsonl")}
    names = {r["title"] for r in read_jsonl(work / "reference/raw/wikipedia/names.jsonl")}
    loop = rejected.get("Loop Alpha", {})
    out.append(Outcome("a redirect loop", "rejected with a reason", f"{loop.get('status')}: {loop.get('reason')}",
                       bool(loop.get("reason"))))
    dis = rejected.get("John Smith", {})
    out.append(Outcome("a disambiguation page", "rejected", f"{dis.get('status')}", dis.get("status") is not None))
    out.append(Outcome("an empty category and a category cycle", "the walk ends; every person found once",
                       f"{len(names)} of {people}", len(names) == people))
    from wikifaces.fixtures.standin.corpus import HOSTILE_TITLE

    hostile = ref.get(HOSTILE_TITLE, {})
    paths_ok = all(".." not in p.name and "passwd" not in str(p) for p in (work / "reference").rglob("*"))
    out.append(Outcome("a title with ../ and /", "downloaded; no path made from it",
                       f"{hostile.get('status')}, paths clean" if paths_ok else "a path was made from it",
                       hostile.get("status") == "ok" and paths_ok))
    licences = [r.get("licence") or "" for r in ref.values()]
    out.append(Outcome("a licence field with HTML and script", "text only", "text only" if not any(
        "<" in x for x in licences) else "markup kept", not any("<" in x for x in licences)))
    return out


# -- data-side faults ---------------------------------------------------------------------------------------------
def damaged_shard(work: Path) -> Outcome:
    """A bit flipped in a published shard, then training on it."""
    import shutil

    from shards import ShardError
    from training import TrainConfig, train_dcgan

    src = work / "faulted" / "processed" / "faces-64"
    ds = work / "damaged" / "faces-64"
    shutil.copytree(src, ds)
    shard = next(ds.glob("shard-*.lmdb"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    try:
        train_dcgan(TrainConfig(dataset=ds, image_size=32, g_width=16, d_width=16, batch_size=4, max_steps=1),
                    work / "damaged", progress=False)
    except ShardError as e:
        ok = "damaged" in str(e) and "sha256" in str(e) and not any((work / "damaged" / "runs").glob("*/checkpoints/*"))
        return Outcome("a damaged shard (bit flip) given to training", "refused before step 0, sha256 named",
                       str(e)[:80], ok)
    return Outcome("a damaged shard (bit flip) given to training", "refused", "trained on it", False)


def map_growth(work: Path) -> Outcome:
    """An LMDB map far too small for the data: the writer grows it and nothing is lost."""
    import numpy as np

    from shards import ShardWriter, open_dataset, verify_dataset

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(300)]
    with ShardWriter(work / "grow", name="grow", image_size=(64, 64), encoding="png",
                     initial_map_size=256 * 1024) as w:
        for i, im in enumerate(images):
            w.add(im, {"key": f"k{i}"})
    ds = open_dataset(work / "grow")
    same = len(ds) == 300 and all((ds[i].image == images[i]).all() for i in range(0, 300, 37))
    ok = same and verify_dataset(work / "grow", decode=True).ok
    return Outcome("an LMDB map that must grow", "grown; every record readable", "all 300 records" if ok else "lost",
                   ok)


PUBLISH = """
import sys
from wikifaces.pipeline import run_stage
from wikifaces.publish import PublishConfig
run_stage("publish", PublishConfig(), sys.argv[1], force=True, progress=False)
"""


def disk_full(work: Path) -> Outcome:
    """The publish stage with a file-size limit of a third of the dataset (RLIMIT_FSIZE: the disk
    fills up mid-shard),
    then again without: the first fails with a clear message and leaves no complete-looking
    dataset, the second gives the same records as the reference."""
    import shutil

    from shards import is_complete, open_dataset

    root = work / "diskfull"
    shutil.copytree(work / "faulted", root)
    shutil.rmtree(root / "processed")

    cap = max(16_384, sum(p.stat().st_size for p in (work / "faulted/processed/faces-64").glob("shard-*")) // 3)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error (EFBIG) instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    full = subprocess.run([sys.executable, "-c", PUBLISH, str(root)], capture_output=True, text=True, env=env,
                          preexec_fn=limit, timeout=300)
    message = (full.stderr.strip().splitlines() or [""])[-1]
    half_done = is_complete(root / "processed" / "faces-64")
    again = subprocess.run([sys.executable, "-c", PUBLISH, str(root)], capture_output=True, text=True, env=env,
                           timeout=300)
    ref = open_dataset(work / "faulted" / "processed" / "faces-64")
    ok = (full.returncode != 0 and "is the disk full?" in message and "file-size limit" in message
          and not half_done and again.returncode == 0)
    if ok:
        new = open_dataset(root / "processed" / "faces-64")
        ok = len(new) == len(ref) and all(new.read_bytes(i) == ref.read_bytes(i) for i in range(len(ref)))
    return Outcome("disk full (RLIMIT_FSIZE)", "clear error, nothing half-published; a rerun completes",
                   message[:80], ok)


def two_builds(work: Path) -> Outcome:
    from wikifaces.core.lock import RootLocked, root_lock

    hold = ("import sys, time\nfrom wikifaces.core.lock import root_lock\n"
            "with root_lock(sys.argv[1], 'the first build'):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", hold, str(work / "locked")], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        p.stdout.readline()
        try:
            with root_lock(work / "locked", "the second build"):
                return Outcome("two builds on one data root", "the second refuses", "both ran", False)
        except RootLocked as e:
            return Outcome("two builds on one data root", "the second refuses, naming the first", str(e)[:80],
                           "the first build" in str(e))
    finally:
        p.kill()
        p.wait()


def untrusted_checkpoint(work: Path) -> Outcome:
    """A checkpoint that would run code when unpickled: loaded only with weights_only=True."""
    from training.train import load_checkpoint

    marker = work / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = work / "evil.pt"
    import torch

    torch.save({"step": 1, "payload": Evil()}, path, pickle_protocol=2)
    try:
        load_checkpoint(path)
        refused, message = False, "loaded"
    except Exception as e:  # any refusal will do: the marker says whether code ran
        refused, message = True, f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"
    return Outcome("a checkpoint from an untrusted source", "refused (weights_only=True), no code run", message,
                   refused and not marker.exists())


FAULT_NAMES = (*(f.fault for f in UPLOAD_FAULTS), *(a[0] for a in API_FAULTS), "everyone else", "a redirect loop",
               "a disambiguation page", "an empty category and a category cycle", "a title with ../ and /",
               "a licence field with HTML and script", "a damaged shard (bit flip) given to training",
               "an LMDB map that must grow", "disk full (RLIMIT_FSIZE)", "two builds on one data root",
               "a checkpoint from an untrusted source")


def run_matrix(work: Path, people: int = 40) -> list[Outcome]:
    out = network_matrix(work, people)
    return [*out, damaged_shard(work), map_growth(work), disk_full(work), two_builds(work), untrusted_checkpoint(work)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = run_matrix(Path(d), args.people)
    width = max(len(r.fault) for r in rows)
    print(f"{'fault':<{width}}  {'expected':<45}  {'outcome':<60}  pass")
    for r in rows:
        print(f"{r.fault:<{width}}  {r.expected:<45}  {r.got:<60}  {'yes' if r.ok else 'NO'}")
    print(f"faults: {len(rows)}")
    print(f"passed: {sum(r.ok for r in rows)}")
    print(f"failed: {sum(not r.ok for r in rows)}")
    print(json.dumps([r.__dict__ for r in rows]) if os.environ.get("FAULTS_JSON") else "", end="")


if __name__ == "__main__":
    main()
