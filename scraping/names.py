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
from typing import Any, Literal

from wikifaces.core.errors import MissingInput
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import write_jsonl

from .config import NamesConfig
from .dump import forget_dump, read_dump
from .http import HttpError, PoliteClient
from .mediawiki import category_members, list_page_links, resolve_titles, wikidata_facts
from .sparql import forget_sparql, query_people
from .titles import normalise_title

log = logging.getLogger("wikifaces.scraping")

INVALID_TITLE = re.compile(r"[<>\[\]{}|\x00-\x1f\x7f]")
NAMES_FILE = "names.jsonl"
REJECTED_FILE = "names-rejected.jsonl"
CACHE_FILE = "http-cache.sqlite"


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
    """Humans from the Query Service or the dump, then (optionally) their articles' page ids."""
    counts: dict[str, Any] = {}
    rejected: list[dict[str, Any]] = []
    if config.source == "wikidata-sparql":
        sparql = query_people(config, out_dir, progress)
        rows = sparql.rows
        counts.update(slices=sparql.slices, resumed_slices=sparql.resumed_slices, halvings=sparql.halvings,
                      route_splits=sparql.route_splits, sparql=sparql.stats)
    else:
        dump = read_dump(config, out_dir, progress)
        rows, rejected = dump.rows, dump.rejected
        counts.update(dump_lines=dump.lines, entities_parsed=dump.entities_parsed,
                      resumed_from_line=dump.resumed_from_line, decompressor=dump.decompressor)
    candidates = len(rows)
    if config.limit is not None:
        rows = rows[: config.limit]
    if config.resolve_pages:
        _resolve_pages(config, client, rows)
    write_jsonl(out_dir / NAMES_FILE, rows)
    write_jsonl(out_dir / REJECTED_FILE, rejected)
    forget_sparql(out_dir)
    forget_dump(out_dir)
    statuses = Counter(r["status"] for r in rejected)
    counts.update({"candidates": candidates, "people": len(rows), "rejected": dict(statuses), "merged": 0,
                   "with_image": sum(1 for r in rows if r["lead_image"]),
                   "with_article": sum(1 for r in rows if r["wiki_title"]),
                   "with_commons_category": sum(1 for r in rows if r["commons_category"]),
                   "warnings": list(client.warnings), "api_requests": client.stats["api_requests"],
                   "api_cache_hits": client.stats["api_cache_hits"]})
    log.info("names: %d people from %s", len(rows), config.source)
    return NamesSummary(len(rows), candidates, dict(statuses), client.stats["api_requests"],
                        client.stats["api_cache_hits"], out_dir / NAMES_FILE, counts)


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
