"""Stage `names`: people from categories, list pages and names files, resolved to canonical
pages with their Wikidata id, deduplicated, optionally filtered by Wikidata facts; or every human
on Wikidata with an image, a Commons category or an article (the Query Service or the dump)."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from wikifaces.core.errors import MissingInput
from wikifaces.core.files import atomic_open
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import jsonl_line, write_jsonl

from .config import NamesConfig
from .dump import forget_dump, read_dump
from .http import HttpError, PoliteClient
from .mediawiki import category_members, list_page_links, resolve_titles, wikidata_facts
from .sparql import forget_sparql, query_people
from .titles import normalise_title
from .wikidata import IdSet, PeopleSink

log = logging.getLogger("wikifaces.scraping")

INVALID_TITLE = re.compile(r"[<>\[\]{}|\x00-\x1f\x7f]")
NAMES_FILE = "names.jsonl"
REJECTED_FILE = "names-rejected.jsonl"
CACHE_FILE = "http-cache.sqlite"
# people of a Wikidata source whose page ids are asked together (100 requests of 50 titles)
RESOLVE_BATCH = 5000


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


def _gather(config: NamesConfig, client: PoliteClient) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """(normalised title -> its sources, in arrival order; rows for titles MediaWiki forbids)."""
    candidates: dict[str, list[str]] = {}
    invalid: list[dict[str, Any]] = []

    def add(title: str, source: str) -> None:
        t = normalise_title(title.split("#", 1)[0])
        if INVALID_TITLE.search(t):  # never sent: "|" would split a batch, the rest are illegal in titles
            invalid.append({"input": t, "sources": [source], "status": "invalid",
                            "reason": "the title contains characters MediaWiki forbids", "title": None,
                            "pageid": None})
        elif t:
            srcs = candidates.setdefault(t, [])
            if source not in srcs:
                srcs.append(source)

    for cat in config.categories:
        for title, found_in in category_members(client, cat, config.category_depth):
            add(title, f"category:{found_in.split(':', 1)[1]}")
    for page in config.list_pages:
        for title in list_page_links(client, page):
            add(title, f"list:{normalise_title(page)}")
    if config.names_file is not None:
        for title in read_names_file(config.names_file):
            add(title, f"file:{Path(config.names_file).name}")
    return candidates, invalid


def _people(candidates: dict[str, list[str]], resolved: dict[str, Any], lang: str
            ) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """One row per page (people reached by several titles or routes merged), and a row for every
    title that named no usable page."""
    people: dict[int, dict[str, Any]] = {}
    rejected: list[dict[str, Any]] = []
    for title, sources in candidates.items():
        r = resolved[title]
        if r.status != "ok":
            rejected.append({"input": title, "sources": sources, "status": r.status, "reason": r.reason,
                             "title": r.title, "pageid": r.pageid})
            continue
        person = people.get(r.pageid)
        if person is None:
            person = people[r.pageid] = {
                "person_id": r.qid or f"{lang}wiki:{r.pageid}", "title": r.title, "label": r.title,
                "wiki_title": r.title, "pageid": r.pageid, "lang": lang, "source": sources[0], "sources": [],
                "inputs": [], "lead_image": r.lead_image,
                "lead_image_width": r.lead_image_size[0] if r.lead_image_size else None,
                "lead_image_height": r.lead_image_size[1] if r.lead_image_size else None,
                "image": None, "commons_category": None, "birth_year": None,
            }
        person["inputs"].append(title)  # several titles (redirects, spellings) can name one page
        person["sources"] += [s for s in sources if s not in person["sources"]]
    return people, rejected


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
    """Titles from every source -> pages (one person each) -> the filters -> the tables."""
    candidates, invalid = _gather(config, client)
    resolved = resolve_titles(client, list(candidates), config.lead_images)
    people, rejected = _people(candidates, resolved, config.http.lang)
    rejected = invalid + rejected
    rows = list(people.values())
    if config.wants_wikidata:
        rows, dropped = _filter(config, client, rows)
        rejected += dropped
    if config.limit is not None:
        rejected += [_person_rejected(p, "over_limit", f"beyond the limit of {config.limit} people")
                     for p in rows[config.limit :]]
        rows = rows[: config.limit]

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / NAMES_FILE, rows)
    write_jsonl(out_dir / REJECTED_FILE, rejected)
    statuses = Counter(r["status"] for r in rejected)
    merged = sum(len(p["inputs"]) - 1 for p in people.values())
    counts = {"titles": len(candidates) + len(invalid), "candidates": len(candidates), "people": len(rows),
              "rejected": dict(statuses), "merged": merged, "warnings": list(client.warnings),
              "api_requests": client.stats["api_requests"], "api_cache_hits": client.stats["api_cache_hits"]}
    log.info("names: %d people from %d candidates", len(rows), len(candidates))
    return NamesSummary(len(rows), len(candidates), dict(statuses), client.stats["api_requests"],
                        client.stats["api_cache_hits"], out_dir / NAMES_FILE, counts)
