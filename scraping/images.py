"""Stage `images`: each person's candidate portraits (the lead image, the Wikidata image, the
Commons category's files, the files that depict them) with licence and author, downloaded
politely, checked, stored by content hash. Every candidate file ends as one row with a status; a
person without any candidate as one file-less row (`no_image`)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from bs4 import BeautifulSoup
from rich.progress import Progress, TaskID

from wikifaces.core.errors import MissingInput
from wikifaces.core.files import atomic_open, atomic_write_text
from wikifaces.core.identity import results_hash, stage_key
from wikifaces.core.imaging import check_image
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import Journal, RowIndex, jsonl_line, read_jsonl

from .config import ImagesConfig
from .http import BadUrl, DisallowedHost, HttpError, PoliteClient, TooLarge
from .mediawiki import category_files, depicted_files, image_infos, wikidata_media
from .names import CACHE_FILE, NAMES_FILE
from .store import ImageStore

log = logging.getLogger("wikifaces.scraping")

IMAGES_FILE = "images.jsonl"
JOURNAL_FILE = "images.journal.jsonl"
KEY_FILE = "images.key"  # the results hash images.jsonl was made under
TAKEDOWN_FILE = "takedown.txt"
RETRYABLE = {"http_error", "corrupt", "not_image"}
# Every person ends as one row with one of these (a closed set).
ImageStatus = Literal["ok", "no_image", "missing_file", "nonfree", "taken_down", "disallowed_host", "bad_url",
                      "http_error", "not_image", "unsupported", "too_small", "too_large", "corrupt"]
RASTER_MIMES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff"}


@dataclass
class Takedowns:
    """Commons file names, Wikidata QIDs and sha256s that must never be kept."""

    files: set[str] = field(default_factory=set)
    qids: set[str] = field(default_factory=set)
    sha256s: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> Takedowns:
        t = cls()
        if path is None or not Path(path).exists():
            return t
        for raw in Path(path).read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if re.fullmatch(r"[0-9a-fA-F]{64}", line):
                t.sha256s.add(line.lower())
            elif re.fullmatch(r"Q\d+", line):
                t.qids.add(line)
            else:
                name = line.split(":", 1)[1] if line.lower().startswith(("file:", "image:")) else line
                t.files.add(_file_key(name))
        return t

    def hit(self, row: dict[str, Any]) -> str | None:
        if row.get("person_id") in self.qids:
            return f"person {row['person_id']} is on the takedown list"
        if row.get("file") and _file_key(row["file"]) in self.files:
            return f"file {row['file']} is on the takedown list"
        if row.get("sha256") in self.sha256s:
            return "image sha256 is on the takedown list"
        return None


def _file_key(name: str) -> str:
    n = " ".join(name.replace("_", " ").split())
    return n[:1].upper() + n[1:]


def html_to_text(value: str | None) -> str | None:
    """Commons' Artist and Credit fields are HTML: keep only their text."""
    if value is None:
        return None
    return " ".join(BeautifulSoup(value, "html.parser").get_text(" ").split()) or None


@dataclass
class ImagesSummary:
    people: int
    statuses: dict[ImageStatus, int]
    downloaded: int
    api_requests: int
    output: Path
    counts: dict[str, Any] = field(default_factory=dict)


def item_hash(config: ImagesConfig, root: DataRoot) -> str:
    """What decides one person's row: not how many people (limit), nor whether failures are
    retried, nor the takedown list (applied to every row on every run)."""
    return results_hash(config.model_copy(update={"limit": None, "retry_failed": False, "takedown_file": None}),
                        root.root)


def reset_images(root: str | os.PathLike[str] | None = None) -> None:
    """Forget every earlier result (journal and table's receipt): the next run fetches everyone anew."""
    out_dir = DataRoot.resolve(root).raw_wikipedia
    for name in (JOURNAL_FILE, KEY_FILE):
        (out_dir / name).unlink(missing_ok=True)


def row_key(row: dict[str, Any]) -> str:
    """A row's identity: one person and one file (or the person's listing, in the journal)."""
    if "candidates" in row:
        return f"{row['person_id']}\t*"
    return f"{row['person_id']}\t{row.get('file') or ''}"


def fetch_images(config: ImagesConfig, root: str | os.PathLike[str] | None = None,
                 progress: bool = True, force: bool = False) -> ImagesSummary:
    """List every person's candidate files, then fetch, check and store each; resumable per person
    (their listing) and per file. Earlier rows are reused only when made with the same parameters;
    `force` fetches everyone again."""
    data = DataRoot.resolve(root)
    if force:
        reset_images(data.root)
    out_dir = data.raw_wikipedia
    names_path = out_dir / NAMES_FILE
    if not names_path.exists():
        raise MissingInput(f"{names_path} does not exist: run the names stage first")
    takedowns = Takedowns.load(config.takedown_file or out_dir / TAKEDOWN_FILE)
    store = ImageStore(data.image_store)
    client = PoliteClient(config.http, cache_path=out_dir / CACHE_FILE)
    chash = item_hash(config, data)
    journal = Journal(out_dir / JOURNAL_FILE, key=row_key, version=stage_key(chash))
    key = out_dir / KEY_FILE
    # Earlier results are indexed, not held: each chunk of people reads back only its own rows.
    earlier = RowIndex()
    if key.exists() and key.read_text() == chash:
        earlier.add(out_dir / IMAGES_FILE, group=_person)
    earlier.add(journal.path, group=_person, keep=journal.current)
    people = islice(read_jsonl(names_path), config.limit)
    tally = _Tally()
    total = _count_lines(names_path) if progress else 0
    total = min(total, config.limit) if config.limit is not None else total
    try:
        # People go through in chunks, and each chunk's rows are written to the table as it ends:
        # only two chunks' listings (with their imageinfo, several kB a file) and rows are held, the
        # one downloading and the next, listed meanwhile: API calls and downloads have limits of
        # their own, so a run takes the longer of the two, not their sum (a real run: ~77 h of API
        # calls and ~34 h of downloads for a million people). API calls stay serial (the client's
        # lock). One bar for everyone (with the time left), and one for each chunk's step under it.
        with atomic_open(out_dir / IMAGES_FILE, "w") as table, \
                Progress(*Progress.get_default_columns(), disable=not progress, transient=True) as bar, \
                ThreadPoolExecutor(1, thread_name_prefix="listing") as lister:
            overall = bar.add_task("people done", total=total)
            lock, stop = threading.Lock(), threading.Event()

            def listed(chunk: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], _Fetch, list[str], list]:
                done = {row_key(r): r for r in earlier.rows(p["person_id"] for p in chunk)}
                run = _Fetch(config, client, store, takedowns, journal, done, lock, stop)
                listings = _listings(run, chunk, _known_listings(done), bar)
                pairs = [(p, c) for p in chunk for c in listings.get(p["person_id"], [])]
                keys = [row_key({"person_id": p["person_id"], "file": c["file"]}) for p, c in pairs]
                todo = [pc for pc, k in zip(pairs, keys, strict=True)
                        if k not in done or (config.retry_failed and done[k]["status"] in RETRYABLE)]
                return chunk, run, keys, todo

            def next_chunk() -> Future | None:
                chunk = list(islice(people, config.chunk_people))
                return lister.submit(listed, chunk) if chunk else None

            try:
                pending = next_chunk()
                while pending is not None:
                    chunk, run, keys, todo = pending.result()
                    pending = next_chunk()  # listed while this chunk downloads
                    _fetch(run, todo, bar)
                    tally.fetched += len(todo)
                    tally.people += len(chunk)
                    bar.advance(overall, len(chunk))
                    bar.refresh()  # each chunk's end is shown, however fast the chunk went
                    rows = _take_down((run.rows[k] for k in keys), takedowns)
                    tally.add(rows)
                    table.writelines(jsonl_line(r) for r in rows)
            finally:
                stop.set()  # a listing still running (this run failed) stops at its next person
        _remove_taken_down(tally.dropped, out_dir / IMAGES_FILE, store)
        atomic_write_text(key, chash)
        journal.remove()
    finally:
        journal.close()
        client.close()
    statuses = tally.statuses
    counts = {"people": tally.people, "files": tally.files, "statuses": dict(statuses), "fetched_now": tally.fetched,
              "routes": dict(tally.routes), "people_with_images": tally.people_with_images,
              "images_per_person": dict(sorted(tally.per_person.items())),
              "api_requests": client.stats["api_requests"], "downloads": client.stats["downloads"],
              "download_bytes": client.stats["download_bytes"], "retries": client.stats["retries"],
              "warnings": list(client.warnings)}

    return ImagesSummary(tally.people, dict(statuses), statuses.get("ok", 0), client.stats["api_requests"],
                         out_dir / IMAGES_FILE, counts)


def _base_row(person: dict[str, Any], file: str | None = None, routes: list[str] | None = None) -> dict[str, Any]:
    return {
        "person_id": person["person_id"], "title": person["title"], "pageid": person["pageid"],
        "file": file, "routes": routes or [], "file_url": None, "url": None, "licence": None, "licence_url": None,
        "artist": None, "credit": None, "attribution_required": None, "nonfree": None, "sha256": None,
        "width": None, "height": None, "format": None, "orientation": None, "bytes": None,
        "status": None, "reason": "",
    }


@dataclass
class _Fetch:
    """One run's tools and where its rows go (journalled as they finish, from any thread)."""

    config: ImagesConfig
    client: PoliteClient
    store: ImageStore
    takedowns: Takedowns
    journal: Journal
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # row key -> row, earlier runs' included
    lock: threading.Lock = field(default_factory=threading.Lock)  # the journal's: shared by chunks in flight
    stop: threading.Event = field(default_factory=threading.Event)  # set: a listing stops (the run failed)

    @property
    def width(self) -> int | None:
        return None if self.config.thumb_width == "original" else int(self.config.thumb_width)

    def finish(self, row: dict[str, Any], status: str | None = None, reason: str = "") -> None:
        if status is not None:
            row.update(status=status, reason=reason)
        with self.lock:
            self.rows[row_key(row)] = row
            self.journal.append(row)


def _known_listings(rows: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The listings earlier runs made: journalled listings, and the file rows of a completed
    earlier table (there, a person's listing is their rows)."""
    out: dict[str, list[dict[str, Any]]] = {}
    earlier: dict[str, list[dict[str, Any]]] = {}  # file rows by person (a completed earlier table's included)
    for r in rows.values():
        if "candidates" in r:
            out[r["person_id"]] = [{"file": c["file"], "routes": c["routes"]} for c in r["candidates"]]
        else:
            earlier.setdefault(r["person_id"], []).append(r)
    for pid, file_rows in earlier.items():
        out.setdefault(pid, [{"file": r["file"], "routes": r.get("routes") or []} for r in file_rows])
    return out


def _listings(run: _Fetch, people: list[dict[str, Any]], known: dict[str, list[dict[str, Any]]], bar: Progress
              ) -> dict[str, list[dict[str, Any]]]:
    """Each of `people`'s candidate files, in route order, at most `max_images_per_person`:
    [{"file", "routes", "info"}] (info: imageinfo when the listing brought it). Journalled per
    person, so a resumed run does not ask again (`known`: earlier runs' listings); a person
    without any gets one file-less row."""
    out = {p["person_id"]: [{**c, "info": None} for c in known[p["person_id"]]] for p in people
           if p["person_id"] in known}
    wanted = [p for p in people if p["person_id"] not in out]
    media = _wikidata_media(run, wanted)
    with _step(bar, "listing candidate files", len(wanted)) as task:
        for p in wanted:
            if run.stop.is_set():
                break
            cands = _candidates(run, p, media.get(p["person_id"]))
            out[p["person_id"]] = cands
            with run.lock:
                listing = {"person_id": p["person_id"], "candidates": [{"file": c["file"], "routes": c["routes"]}
                                                                        for c in cands]}
                run.journal.append(listing)
                run.rows[row_key(listing)] = listing
            bar.advance(task)
    return out


@contextlib.contextmanager
def _step(bar: Progress, label: str, total: int) -> Iterator[TaskID]:
    """A bar for one step of one chunk, under the overall one, gone when the step ends."""
    task = bar.add_task(label, total=total)
    try:
        yield task
    finally:
        bar.remove_task(task)


def _count_lines(path: Path) -> int:
    """Lines of a file, read in blocks (a million people's names file in about a second)."""
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def _wikidata_media(run: _Fetch, people: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    """P18 and P373 of people whose names row does not carry them (the Wikipedia source): one
    wbgetentities request per 50 people, only when a route needs them."""
    config = run.config
    if config.max_images_per_person == 1 or not {"p18", "category"} & set(config.routes):
        return {}
    qids = [p["person_id"] for p in people if p["person_id"].startswith("Q")
            and not p.get("image") and not p.get("commons_category")]
    if not qids:
        return {}
    try:
        return wikidata_media(run.client, qids)
    except HttpError as exc:
        run.client.warn(f"Wikidata's images and Commons categories could not be read ({exc.reason}): "
                         "those routes are skipped for people whose names row lacks them")
        return {}


def _candidates(run: _Fetch, person: dict[str, Any], media: tuple[list[str], list[str]] | None
                ) -> list[dict[str, Any]]:
    """One person's candidates by route, merged by file, capped. A route that fails is recorded in
    the client's warnings and skipped: the other routes' files still count."""
    config, cap = run.config, run.config.max_images_per_person
    found: dict[str, dict[str, Any]] = {}

    def add(name: str | None, route: str, info: dict[str, Any] | None = None) -> None:
        if not name:
            return
        k = _file_key(name)
        if k in found:
            if route not in found[k]["routes"]:
                found[k]["routes"].append(route)
        elif len(found) < cap:
            found[k] = {"file": name, "routes": [route], "info": info}

    p18 = [person["image"]] if person.get("image") else (media[0] if media else [])
    category = person.get("commons_category") or (media[1][0] if media and media[1] else None)
    qid = person["person_id"] if str(person["person_id"]).startswith("Q") else None
    for route in config.routes:
        if route == "lead":
            add(person.get("lead_image"), "lead")
        elif route == "p18":
            for name in p18:
                add(name, "p18")
        elif len(found) >= cap:
            break
        elif route == "category" and category:
            try:
                for name, info in category_files(run.client, category, cap, run.width, config.category_depth):
                    add(name, "category", info)
            except HttpError as exc:
                run.client.warn(f"the Commons category of {person['person_id']} could not be listed: {exc.reason}")
        elif route == "depicts" and qid:
            try:
                for name, info in depicted_files(run.client, qid, cap, run.width):
                    add(name, "depicts", info)
            except HttpError as exc:
                run.client.warn(f"the files depicting {qid} could not be searched: {exc.reason}")
    if not found:
        return [{"file": None, "routes": [], "info": None}]
    return list(found.values())


def _fetch(run: _Fetch, todo: list[tuple[dict[str, Any], dict[str, Any]]], bar: Progress) -> None:
    """Every candidate's row: those the metadata settles at once, then the downloads (2 in flight)."""
    for p, c in todo:
        if not c["file"]:
            run.finish(_base_row(p), "no_image", "no lead image, no Wikidata image, nothing on Commons"
                       if run.config.max_images_per_person > 1 else "the article has no (free) lead image")
    downloads = _plan_downloads(run, [(p, c) for p, c in todo if c["file"]])
    with _step(bar, "downloading portraits", len(downloads)) as task, \
            ThreadPoolExecutor(run.config.http.max_concurrent_downloads, thread_name_prefix="download") as pool:
        futures = [pool.submit(_download, run, row, url) for row, url in downloads]
        for fut in as_completed(futures):
            run.finish(fut.result())
            bar.advance(task)


def _plan_downloads(run: _Fetch, todo: list[tuple[dict[str, Any], dict[str, Any]]]
                    ) -> list[tuple[dict[str, Any], str]]:
    """imageinfo for every candidate that came without it (lead and P18 files, 50 a request); rows
    for files that need no download (missing, non-free, taken down, ruled out by their
    metadata); (row, URL) for the rest."""
    config, width = run.config, run.width
    need = [c["file"] for _, c in todo if c["info"] is None]
    infos = image_infos(run.client, need, width) if need else {}
    downloads: list[tuple[dict[str, Any], str]] = []
    for p, c in todo:
        row = _base_row(p, c["file"], list(c["routes"]))
        info = c["info"] if c["info"] is not None else infos.get(c["file"])
        if info is None:
            run.finish(row, "missing_file", "neither Commons nor the wiki has this file")
            continue
        _licence_fields(row, info)
        url = info.get("thumburl") if width is not None else None
        url = url or info.get("url")
        row["url"] = url if isinstance(url, str) else None
        ruled_out = _ruled_out(info, url, config)
        if row["nonfree"] and not config.allow_nonfree:
            run.finish(row, "nonfree", f"non-free file ({row['licence'] or 'no licence'})")
        elif (hit := run.takedowns.hit(row)) is not None:
            run.finish(row, "taken_down", hit)
        elif not row["url"]:
            run.finish(row, "missing_file", "imageinfo gave no URL")
        elif ruled_out is not None:  # the metadata already says no: nothing to download
            row.update(width=ruled_out[2], height=ruled_out[3])
            run.finish(row, ruled_out[0], ruled_out[1])
        else:
            downloads.append((row, row["url"]))
    return downloads


def _licence_fields(row: dict[str, Any], info: dict[str, Any]) -> None:
    """Licence, author and credit from imageinfo's extmetadata, as text."""
    md = {k: v.get("value") for k, v in (info.get("extmetadata") or {}).items() if isinstance(v, dict)}
    row.update(
        file_url=info.get("descriptionurl"), licence=html_to_text(md.get("LicenseShortName")),
        licence_url=md.get("LicenseUrl"), artist=html_to_text(md.get("Artist")),
        credit=html_to_text(md.get("Credit")),
        attribution_required=str(md.get("AttributionRequired", "")).lower() == "true",
        nonfree=str(md.get("NonFree", "")).lower() == "true",
    )


_DOWNLOAD_STATUS = ((DisallowedHost, "disallowed_host"), (BadUrl, "bad_url"), (TooLarge, "too_large"),
                    (HttpError, "http_error"))


def _download(run: _Fetch, row: dict[str, Any], url: str) -> dict[str, Any]:
    """Download, check and store one image; the row with its status (a thread of the pool)."""
    try:
        dl = run.client.download(url)
    except HttpError as exc:
        status = next(s for kind, s in _DOWNLOAD_STATUS if isinstance(exc, kind))
        row.update(status=status, reason=exc.reason)
        return row
    config = run.config
    check = check_image(dl.body, dl.content_type, config.min_side, config.max_pixels)
    row.update(format=check.format, width=check.width, height=check.height, bytes=len(dl.body),
               orientation=check.orientation if check.format else None)
    if check.status != "ok":
        row.update(status=check.status, reason=check.reason)
        return row
    row["sha256"] = run.store.put(dl.body)
    hit = run.takedowns.hit(row)
    row.update(status="taken_down" if hit else "ok", reason=hit or "")
    return row


def _ruled_out(info: dict[str, Any], url: Any, config: ImagesConfig) -> tuple[str, str, int | None, int | None] | None:
    """(status, reason, width, height) when imageinfo's mime, size and dimensions already rule the file
    out (vector or other non-raster type, over the byte or pixel cap, under the minimum side);
    None when it may be fine or the metadata does not say. The same statuses as after a download."""
    mime = str(info.get("mime") or "").lower()
    if mime == "image/svg+xml":
        return "unsupported", "SVG (vector) image", None, None
    if mime and mime not in RASTER_MIMES:
        return "unsupported", f"{mime} is not a raster image", None, None
    original = url == info.get("url")
    w, h = (info.get("width"), info.get("height")) if original else (info.get("thumbwidth"), info.get("thumbheight"))
    size = info.get("size")
    if original and isinstance(size, int) and size > config.http.max_response_bytes:
        return "too_large", f"body of {size:,} bytes exceeds the cap of {config.http.max_response_bytes:,}", w, h
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        return None
    if w * h > config.max_pixels:
        return "too_large", f"{w}x{h} = {w * h:,} pixels exceeds the cap of {config.max_pixels:,}", w, h
    if min(w, h) < config.min_side:
        return "too_small", f"{w}x{h} is under the minimum side of {config.min_side}", w, h
    return None


def _person(row: dict[str, Any]) -> str:
    return row["person_id"]


@dataclass
class _Tally:
    """What the summary counts, added up chunk by chunk as the table is written."""

    people: int = 0
    files: int = 0
    fetched: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    per_person: Counter[int] = field(default_factory=Counter)  # how many people have N ok files
    people_with_images: int = 0
    dropped: set[str] = field(default_factory=set)  # sha256s of taken-down rows

    def add(self, rows: list[dict[str, Any]]) -> None:
        """One chunk's rows (a person's rows all lie in one chunk)."""
        self.files += len(rows)
        self.statuses.update(r["status"] for r in rows)
        self.routes.update(route for r in rows for route in r.get("routes") or [])
        ok = Counter(r["person_id"] for r in rows if r["status"] == "ok")
        self.per_person.update(ok.values())
        self.people_with_images += len(ok)
        self.dropped.update(r["sha256"] for r in rows if r["status"] == "taken_down" and r.get("sha256"))


def _take_down(rows: Iterable[dict[str, Any]], takedowns: Takedowns) -> list[dict[str, Any]]:
    """Rows with listed people, files and hashes taken down, old rows or new."""
    out = []
    for row in rows:
        hit = takedowns.hit(row)
        if hit and row["status"] != "taken_down":
            row = {**row, "status": "taken_down", "reason": hit}
        out.append(row)
    return out


def _remove_taken_down(dropped: set[str], table: Path, store: ImageStore) -> None:
    """Delete the stored bytes of taken-down files unless a kept row of the table still uses them
    (the table is read again only when something was taken down)."""
    if dropped:
        kept = {r["sha256"] for r in read_jsonl(table) if r["status"] == "ok" and r.get("sha256") in dropped}
        for sha in dropped - kept:
            store.remove(sha)
