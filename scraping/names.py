"""Stage `names`: people from categories, list pages and names files, resolved to canonical
pages with their Wikidata id, deduplicated, optionally filtered by Wikidata facts; or every human
on Wikidata with an image, a Commons category or an article (the Query Service or the dump)."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from wikifaces.core.errors import MissingInput
from wikifaces.core.files import atomic_open
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import jsonl_line

from .config import NamesConfig
from .dump import forget_dump, read_dump
from .http import HttpError, PoliteClient
from .mediawiki import Resolved, category_members, list_page_links, resolve_titles, wikidata_facts
from .sparql import forget_sparql, query_people
from .titles import normalise_title
from .wikidata import IdSet, PeopleSink

log = logging.getLogger("wikifaces.scraping")

INVALID_TITLE = re.compile(r"[<>\[\]{}|\x00-\x1f\x7f]")
NAMES_FILE = "names.jsonl"
REJECTED_FILE = "names-rejected.jsonl"
CACHE_FILE = "http-cache.sqlite"
WORK_FILE = "names.work.sqlite"  # the Wikipedia route's, while it runs
# people of a Wikidata source whose page ids are asked together (100 requests of 50 titles)
RESOLVE_BATCH = 5000
# titles (then people) of the Wikipedia route handled together: 20 requests of 50 titles; its rows are
# larger than a Wikidata source's (every title and source that named the page)
TITLE_BATCH = 1000


# Why a title or a person was left out: a closed set (rows of names-rejected.jsonl).
NameStatus = Literal["invalid", "missing", "disambiguation", "redirect_loop", "not_human", "born_before",
                     "over_limit", "malformed"]


@dataclass
class NamesSummary:
    people: int
    candidates: int
    rejected: dict[NameStatus, int]
    api_requests: int
    api_cache_hits: int
    output: Path
    counts: dict[str, Any] = field(default_factory=dict)


def _gather(config: NamesConfig, client: PoliteClient, work: _NamesWork, reject: Callable[[dict[str, Any]], None]
            ) -> int:
    """Every title from every source into the work file (in arrival order, with its sources); a
    row for each title MediaWiki forbids. Returns how many of those there were."""
    invalid = 0

    def add(title: str, source: str) -> None:
        nonlocal invalid
        t = normalise_title(title.split("#", 1)[0])
        if INVALID_TITLE.search(t):  # never sent: "|" would split a batch, the rest are illegal in titles
            invalid += 1
            reject({"input": t, "sources": [source], "status": "invalid",
                    "reason": "the title contains characters MediaWiki forbids", "title": None, "pageid": None})
        elif t:
            work.add_title(t, source)

    for cat in config.categories:
        for title, found_in in category_members(client, cat, config.category_depth):
            add(title, f"category:{found_in.split(':', 1)[1]}")
    for page in config.list_pages:
        for title in list_page_links(client, page):
            add(title, f"list:{normalise_title(page)}")
    if config.names_file is not None:
        for title in read_names_file(config.names_file):
            add(title, f"file:{Path(config.names_file).name}")
    return invalid


def _person(r: Resolved, sources: list[str], lang: str) -> dict[str, Any]:
    """The row of a page the first time a title names it."""
    return {
        "person_id": r.qid or f"{lang}wiki:{r.pageid}", "title": r.title, "label": r.title,
        "wiki_title": r.title, "pageid": r.pageid, "lang": lang, "source": sources[0], "sources": [],
        "inputs": [], "lead_image": r.lead_image,
        "lead_image_width": r.lead_image_size[0] if r.lead_image_size else None,
        "lead_image_height": r.lead_image_size[1] if r.lead_image_size else None,
        "image": None, "commons_category": None, "birth_year": None,
    }


class _NamesWork:
    """The Wikipedia route's work file (SQLite, beside names.jsonl while the stage runs): titles in
    order of arrival with their sources, the pages they name with every title that names each
    (redirects, spellings, several categories), and the rows left for the end. A category of a
    million members (Living people) is merged here instead of in memory (~1.8 kB a person as
    rows); the stage holds one batch of `TITLE_BATCH` titles or people at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)  # a killed run's: started afresh (the HTTP cache makes that cheap)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE titles (seq INTEGER PRIMARY KEY, title TEXT NOT NULL UNIQUE, sources BLOB NOT NULL);
            CREATE TABLE pages (seq INTEGER PRIMARY KEY, pageid INTEGER NOT NULL UNIQUE, row BLOB NOT NULL);
            CREATE TABLE last (seq INTEGER PRIMARY KEY, row BLOB NOT NULL);
            BEGIN;
        """)
        self.titles = 0
        self.merged = 0  # titles that named a page another title had named

    def add_title(self, title: str, source: str) -> None:
        if self.db.execute("INSERT INTO titles (title, sources) VALUES (?, ?) ON CONFLICT (title) DO NOTHING",
                           (title, orjson.dumps([source]))).rowcount:
            self.titles += 1
            return
        (raw,) = self.db.execute("SELECT sources FROM titles WHERE title = ?", (title,)).fetchone()
        sources = orjson.loads(raw)
        if source not in sources:
            self.db.execute("UPDATE titles SET sources = ? WHERE title = ?", (orjson.dumps([*sources, source]), title))

    def title_batches(self, size: int) -> Iterator[list[tuple[str, list[str]]]]:
        """(title, its sources) in order of arrival, `size` at a time."""
        yield from self._batches("SELECT seq, title, sources FROM titles WHERE seq > ? ORDER BY seq LIMIT ?", size,
                                 lambda row: (row[1], orjson.loads(row[2])))

    def add_person(self, r: Resolved, title: str, sources: list[str], lang: str) -> None:
        """A title that named a page: a new person, or one more title (and its sources) for one."""
        found = self.db.execute("SELECT row FROM pages WHERE pageid = ?", (r.pageid,)).fetchone()
        person = _person(r, sources, lang) if found is None else orjson.loads(found[0])
        person["inputs"].append(title)
        person["sources"] += [s for s in sources if s not in person["sources"]]
        if found is None:
            self.db.execute("INSERT INTO pages (pageid, row) VALUES (?, ?)", (r.pageid, orjson.dumps(person)))
        else:
            self.merged += 1
            self.db.execute("UPDATE pages SET row = ? WHERE pageid = ?", (orjson.dumps(person), r.pageid))

    def people_batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """Every person's row in order of the first title that named them, `size` at a time."""
        yield from self._batches("SELECT seq, row FROM pages WHERE seq > ? ORDER BY seq LIMIT ?", size,
                                 lambda row: orjson.loads(row[1]))

    def put_last(self, row: dict[str, Any]) -> None:
        """A rejected row whose place is after every other (beyond the limit)."""
        self.db.execute("INSERT INTO last (row) VALUES (?)", (orjson.dumps(row),))

    def last_rows(self) -> Iterator[dict[str, Any]]:
        for batch in self._batches("SELECT seq, row FROM last WHERE seq > ? ORDER BY seq LIMIT ?", TITLE_BATCH,
                                   lambda row: orjson.loads(row[1])):
            yield from batch

    def _batches(self, sql: str, size: int, parse: Callable[[tuple], Any]) -> Iterator[list[Any]]:
        after = 0
        while rows := self.db.execute(sql, (after, size)).fetchall():
            after = rows[-1][0]
            yield [parse(row) for row in rows]

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def _filter(config: NamesConfig, client: PoliteClient, rows: list[dict[str, Any]]
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(people kept, rows for those left out) by Wikidata: humans only, born after a year."""
    facts = _wikidata_facts(config, client, [p["person_id"] for p in rows if p["person_id"].startswith("Q")])
    kept, rejected = [], []
    for p in rows:
        f = facts.get(p["person_id"])
        p["birth_year"] = f.birth_year if f else None
        if config.check_humans and not (f and f.human):
            rejected.append(_person_rejected(p, "not_human", "Wikidata does not say this is a human (P31 = Q5)"))
        elif config.born_after is not None and (p["birth_year"] is None or p["birth_year"] < config.born_after):
            born = p["birth_year"] if p["birth_year"] is not None else "unknown"
            rejected.append(_person_rejected(p, "born_before", f"born {born}, the filter wants {config.born_after} "
                                             "or later"))
        else:
            kept.append(p)
    return kept, rejected


def _person_rejected(person: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    """A resolved person left out by a filter: one row, with every title that named them."""
    return {"input": person["title"], "inputs": person["inputs"], "sources": person["sources"], "status": status,
            "reason": reason, "title": person["title"], "pageid": person["pageid"]}


def _wikidata_facts(config: NamesConfig, client: PoliteClient, qids: list[str]) -> dict[str, Any]:
    """The Wikidata facts the filters need; when Wikidata cannot be asked, say which filter needs
    it, where it was asked, and how to do without."""
    try:
        return wikidata_facts(client, qids)
    except HttpError as exc:
        ways = (["--no-humans-only"] if config.check_humans else []) + \
            ([f"leaving out --born-after {config.born_after}"] if config.born_after is not None else [])
        raise HttpError(f"the Wikidata filter could not ask {config.http.wikidata_api_url}: {exc.reason}. "
                        f"Run without it: {' and '.join(ways)}.", exc.status) from exc


def read_names_file(path: str | os.PathLike[str]) -> list[str]:
    """One name a line; blank lines and lines starting with # are skipped."""
    if not Path(path).is_file():
        raise MissingInput(f"the names file {path} does not exist")
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def collect_names(config: NamesConfig, root: str | os.PathLike[str] | None = None, progress: bool = True,
                  force: bool = False) -> NamesSummary:
    """Collect, resolve, deduplicate and filter people; write names.jsonl. The Wikidata sources
    journal their slices or dump position and resume a killed run; `force` starts them afresh."""
    data = DataRoot.resolve(root)
    out_dir = data.raw_wikipedia
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        forget_sparql(out_dir)
        forget_dump(out_dir)
    client = PoliteClient(config.http, cache_path=out_dir / CACHE_FILE)
    try:
        if config.source == "wikipedia":
            return _collect(config, client, out_dir)
        return _collect_wikidata(config, client, out_dir, progress)
    finally:
        client.close()


def _collect_wikidata(config: NamesConfig, client: PoliteClient, out_dir: Path, progress: bool) -> NamesSummary:
    """Humans from the Query Service or the dump, then (optionally) their articles' page ids;
    written as they arrive (`_Output`), never held as a table."""
    counts: dict[str, Any] = {}
    with atomic_open(out_dir / NAMES_FILE, "w") as people_fh, atomic_open(out_dir / REJECTED_FILE, "w") as rej_fh:
        out = _Output(config, client, people_fh, rej_fh)
        if config.source == "wikidata-sparql":
            sparql = query_people(config, out_dir, out, progress)
            counts.update(slices=sparql.slices, resumed_slices=sparql.resumed_slices, halvings=sparql.halvings,
                          route_splits=sparql.route_splits, sparql=sparql.stats)
        else:
            dump = read_dump(config, out_dir, out, progress)
            counts.update(dump_lines=dump.lines, entities_parsed=dump.entities_parsed,
                          resumed_from_line=dump.resumed_from_line, decompressor=dump.decompressor)
        out.flush()
    forget_sparql(out_dir)
    forget_dump(out_dir)
    counts.update({"candidates": out.found, "people": out.people, "rejected": dict(out.statuses), "merged": 0,
                   **out.tally, "warnings": list(client.warnings), "api_requests": client.stats["api_requests"],
                   "api_cache_hits": client.stats["api_cache_hits"]})
    log.info("names: %d people from %s", out.people, config.source)
    return NamesSummary(out.people, out.found, dict(out.statuses), client.stats["api_requests"],
                        client.stats["api_cache_hits"], out_dir / NAMES_FILE, counts)


class _Output(PeopleSink):
    """names.jsonl and names-rejected.jsonl written as the Wikidata sources find people (millions
    of them): people are told apart by id and, with `resolve_pages`, their page ids are asked a batch
    at a time. The stage holds one batch and the ids seen (~10 bytes a person), not the table (~1.8 kB
    a person as rows)."""

    def __init__(self, config: NamesConfig, client: PoliteClient, people_fh: IO[str], rejected_fh: IO[str]) -> None:
        self._config, self._client = config, client
        self._people_fh, self._rejected_fh = people_fh, rejected_fh
        self._seen = IdSet()
        self._batch: list[dict[str, Any]] = []
        self.people = 0
        self.statuses: Counter[str] = Counter()
        self.tally = {"with_image": 0, "with_article": 0, "with_commons_category": 0}

    @property
    def found(self) -> int:
        """Different people found (those beyond the limit included)."""
        return len(self._seen)

    @property
    def full(self) -> bool:
        return self._config.limit is not None and len(self._seen) >= self._config.limit

    def person(self, row: dict[str, Any]) -> None:
        full = self.full
        if not self._seen.add(row["person_id"]):  # WDQS finds a person once a route and a birth date
            return
        if not full:
            self._batch.append(row)
            if len(self._batch) >= (RESOLVE_BATCH if self._config.resolve_pages else 1):
                self.flush()

    def rejected(self, row: dict[str, Any]) -> None:
        self.statuses[row["status"]] += 1
        self._rejected_fh.write(jsonl_line(row))

    def flush(self) -> None:
        """Resolve the batch's page ids and write its rows."""
        if self._config.resolve_pages:
            _resolve_pages(self._config, self._client, self._batch)
        for r in self._batch:
            self._people_fh.write(jsonl_line(r))
            self.tally["with_image"] += bool(r["lead_image"])
            self.tally["with_article"] += bool(r["wiki_title"])
            self.tally["with_commons_category"] += bool(r["commons_category"])
        self.people += len(self._batch)
        self._batch.clear()


def _resolve_pages(config: NamesConfig, client: PoliteClient, rows: list[dict[str, Any]]) -> None:
    """Page id (and, where Wikidata has no image, the article's lead image) of every row with an
    article: 50 titles a request (500 with a token), from the HTTP cache on a rerun."""
    titles = [r["wiki_title"] for r in rows if r["wiki_title"] and not INVALID_TITLE.search(r["wiki_title"])]
    if not titles:
        return
    resolved = resolve_titles(client, titles, config.lead_images)
    for r in rows:
        res = resolved.get(r["wiki_title"]) if r["wiki_title"] else None
        if res is None or res.status != "ok":
            continue
        r["pageid"] = res.pageid
        r["title"] = res.title
        if not r["lead_image"] and res.lead_image:
            r["lead_image"] = res.lead_image
            if res.lead_image_size:
                r["lead_image_width"], r["lead_image_height"] = res.lead_image_size


def _collect(config: NamesConfig, client: PoliteClient, out_dir: Path) -> NamesSummary:
    """Titles from every source -> pages (one person each) -> the filters -> the tables, through
    the work file (`_NamesWork`): a batch of titles or people in memory at a time."""
    work = _NamesWork(out_dir / WORK_FILE)
    statuses: Counter[str] = Counter()
    people = 0
    try:
        with atomic_open(out_dir / NAMES_FILE, "w") as people_fh, atomic_open(out_dir / REJECTED_FILE, "w") as rej_fh:
            def reject(row: dict[str, Any]) -> None:
                statuses[row["status"]] += 1
                rej_fh.write(jsonl_line(row))

            invalid = _gather(config, client, work, reject)
            for batch in work.title_batches(TITLE_BATCH):
                resolved = resolve_titles(client, [title for title, _ in batch], config.lead_images)
                for title, sources in batch:
                    r = resolved[title]
                    if r.status == "ok":
                        work.add_person(r, title, sources, config.http.lang)
                    else:
                        reject({"input": title, "sources": sources, "status": r.status, "reason": r.reason,
                                "title": r.title, "pageid": r.pageid})
            for rows in work.people_batches(TITLE_BATCH):
                if config.wants_wikidata:
                    rows, dropped = _filter(config, client, rows)
                    for row in dropped:
                        reject(row)
                for p in rows:
                    if config.limit is not None and people >= config.limit:
                        work.put_last(_person_rejected(p, "over_limit", f"beyond the limit of {config.limit} people"))
                    else:
                        people_fh.write(jsonl_line(p))
                        people += 1
            for row in work.last_rows():
                reject(row)
    finally:
        work.close()
    counts = {"titles": work.titles + invalid, "candidates": work.titles, "people": people,
              "rejected": dict(statuses), "merged": work.merged, "warnings": list(client.warnings),
              "api_requests": client.stats["api_requests"], "api_cache_hits": client.stats["api_cache_hits"]}
    log.info("names: %d people from %d candidates", people, work.titles)
    return NamesSummary(people, work.titles, dict(statuses), client.stats["api_requests"],
                        client.stats["api_cache_hits"], out_dir / NAMES_FILE, counts)
