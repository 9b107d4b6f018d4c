"""Source `wikidata-sparql`: Wikidata's humans from the Wikidata Query Service, slice by slice.

WDQS's limits (2025-26): a query stops at 60 s; each IP and User-Agent gets 60 s of query time a
minute; 30 errors a minute get a client banned for a while. So the population is cut into
birth-date windows that grow or shrink towards `sparql_slice_rows` results; a window that times out
is halved, and a one-day window that still times out is split by route (has an image / else a
Commons category / else only an article). Queries are paced by their measured time, and the run
stops with a clear message before the error budget is spent. Every finished slice is journalled
with its rows, so a killed run resumes with the slices left.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from wikifaces.core.identity import results_hash, stage_key
from wikifaces.core.tables import Journal, RowIndex

from .config import HttpConfig, NamesConfig
from .http import HttpError, parse_retry_after
from .wikidata import PeopleSink, file_name, person_row, year_of

log = logging.getLogger("wikifaces.scraping")

JOURNAL_FILE = "names-sparql.journal.jsonl"
TIMEOUT_MARKERS = ("TimeoutException", "QueryTimeoutException", "timeout")
ROUTES = ("image", "category", "article")  # a partition of "any": P18; else P373; else only the article
FIRST_DATED = dt.date(1000, 1, 1).toordinal()  # births before this are one window, unbounded below
INITIAL_DAYS = 3650


class SparqlTimeout(Exception):
    """WDQS stopped the query at its time limit (or cut its answer short)."""


@dataclass(frozen=True)
class Slice:
    """Humans born in [start, end) (day ordinals; None: unbounded), or with no birth date
    (`undated`), restricted to a route ("any" or one of ROUTES)."""

    start: int | None
    end: int | None
    route: str = "any"
    undated: bool = False

    @property
    def id(self) -> str:
        return "undated:" + self.route if self.undated else f"{self.start}:{self.end}:{self.route}"

    def describe(self) -> str:
        if self.undated:
            return f"people with no birth date ({self.route})"
        lo = dt.date.fromordinal(self.start).isoformat() if self.start else "the beginning"
        hi = dt.date.fromordinal(self.end).isoformat() if self.end else "the end"
        return f"births from {lo} to {hi} ({self.route})"


def _xsd(day: int) -> str:
    return f'"{dt.date.fromordinal(day).isoformat()}T00:00:00Z"^^xsd:dateTime'


def build_query(config: NamesConfig, s: Slice) -> str:
    """The SELECT for one slice: one row per (person, birth, image, category, article)."""
    lang = config.http.lang
    lines = ["SELECT ?person ?personLabel ?birth ?image ?category ?title WHERE {", "  ?person wdt:P31 wd:Q5 ."]
    if s.undated:
        lines.append("  FILTER NOT EXISTS { ?person wdt:P569 [] . }")
    else:
        lines.append("  ?person wdt:P569 ?birth .")
        if s.start is not None:
            lines.append(f"  FILTER(?birth >= {_xsd(s.start)})")
        if s.end is not None:
            lines.append(f"  FILTER(?birth < {_xsd(s.end)})")
    if config.occupations:
        lines.append(f"  VALUES ?occupation {{ {' '.join('wd:' + q for q in config.occupations)} }}")
        lines.append("  ?person wdt:P106 ?occupation .")
    if config.citizenships:
        lines.append(f"  VALUES ?country {{ {' '.join('wd:' + q for q in config.citizenships)} }}")
        lines.append("  ?person wdt:P27 ?country .")
    if config.has_article is not None and config.has_article != lang:
        lines.append(f"  ?other schema:about ?person ; schema:isPartOf <https://{config.has_article}.wikipedia.org/> .")
    need_image = config.has_image or s.route == "image"
    need_category = config.has_commons_category or s.route == "category"
    need_article = config.has_article == lang or s.route == "article"
    article = f"?article schema:about ?person ; schema:isPartOf <https://{lang}.wikipedia.org/> ; schema:name ?title ."
    for need, triple in ((need_image, "?person wdt:P18 ?image ."), (need_category, "?person wdt:P373 ?category ."),
                         (need_article, article)):
        lines.append(f"  {triple}" if need else f"  OPTIONAL {{ {triple} }}")
    if s.route in ("category", "article"):
        lines.append("  FILTER NOT EXISTS { ?person wdt:P18 [] . }")
    if s.route == "article":
        lines.append("  FILTER NOT EXISTS { ?person wdt:P373 [] . }")
    if s.route == "any" and not (need_image or need_category or need_article):
        lines.append("  FILTER(BOUND(?image) || BOUND(?category) || BOUND(?title))")
    lines.append(f'  SERVICE wikibase:label {{ bd:serviceParam wikibase:language "{lang},mul". }}')
    lines.append("}")
    return "\n".join(lines)


class WdqsClient:
    """Asks WDQS politely: our User-Agent, pacing by query time, Retry-After on 429, and a stop
    before the error budget is spent."""

    def __init__(self, http: HttpConfig) -> None:
        http.require_contact()
        self.http = http
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": http.user_agent(), "Accept": "application/sparql-results+json",
                                     "Accept-Encoding": "gzip, deflate"})
        self.spent: collections.deque[tuple[float, float]] = collections.deque()  # (finished, seconds)
        self.errors: collections.deque[float] = collections.deque()
        self.stats: collections.Counter[str] = collections.Counter()

    def _forget_before(self, now: float) -> None:
        """Keep only the last minute of query times and errors (WDQS's budgets are per minute)."""
        while self.spent and self.spent[0][0] < now - 60:
            self.spent.popleft()
        while self.errors and self.errors[0] < now - 60:
            self.errors.popleft()

    def _pace(self) -> None:
        """Wait until the query time of the last minute leaves room (WDQS: 60 s a minute)."""
        while True:
            now = time.monotonic()
            self._forget_before(now)
            used = sum(s for _, s in self.spent)
            if used < self.http.sparql_seconds_per_minute or not self.spent:
                return
            wait = self.spent[0][0] + 60 - now
            self.stats["paced_seconds"] += max(0.0, wait)
            time.sleep(max(0.01, wait))

    def _error(self, what: str) -> None:
        now = time.monotonic()
        self.errors.append(now)
        self._forget_before(now)
        self.stats["errors"] += 1
        if len(self.errors) >= self.http.sparql_errors_per_minute:
            raise HttpError(f"stopping: {len(self.errors)} errors from the Wikidata Query Service within a minute "
                            f"(the last: {what}); WDQS bans clients that reach 30. The slices done are journalled: "
                            "run again later to go on from there.")

    def select(self, query: str) -> list[dict[str, Any]]:
        """The bindings of a SELECT; SparqlTimeout when WDQS stopped it at its limit."""
        attempts = 0
        while True:
            attempts += 1
            self._pace()
            start = time.monotonic()
            try:
                resp = self.session.get(self.http.sparql_url, params={"query": query, "format": "json"},
                                        timeout=(self.http.connect_timeout, self.http.sparql_timeout))
                body = resp.content
            except requests.Timeout as exc:
                self._spend(start)
                self._error("no answer within the time limit")
                raise SparqlTimeout("no answer in time") from exc
            except requests.ConnectionError as exc:
                self._spend(start)
                self._error(f"connection failed: {exc.__class__.__name__}")
                if attempts >= self.http.max_attempts:
                    raise HttpError(f"the Wikidata Query Service at {self.http.sparql_url} cannot be reached") from exc
                time.sleep(min(self.http.backoff_max, self.http.backoff_initial * 2 ** attempts))
                continue
            seconds = self._spend(start)
            self.stats["queries"] += 1
            if resp.status_code == 200:
                try:
                    data = orjson.loads(body)
                    bindings = data["results"]["bindings"]
                    if not isinstance(bindings, list):
                        raise TypeError("bindings is not a list")
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    # WDQS cuts the stream of a query that hits its limit mid-answer: a truncated 200
                    self._error("an answer cut short")
                    raise SparqlTimeout(f"answer cut short after {seconds:.1f} s ({exc})") from exc
                self.stats["rows"] += len(bindings)
                return bindings
            text = body[:2000].decode("utf-8", "replace")
            if resp.status_code in (500, 502, 503, 504) and any(m in text for m in TIMEOUT_MARKERS):
                self._error(f"query timeout (HTTP {resp.status_code})")
                raise SparqlTimeout(f"HTTP {resp.status_code} timeout after {seconds:.1f} s")
            if resp.status_code == 429 or resp.status_code >= 500:
                self._error(f"HTTP {resp.status_code}")
                if attempts >= self.http.max_attempts:
                    raise HttpError(f"the Wikidata Query Service answered HTTP {resp.status_code} {attempts} times",
                                    resp.status_code)
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                wait = self.http.backoff_initial * 2 ** (attempts - 1) if wait is None else wait
                self.stats["retries"] += 1
                time.sleep(min(self.http.backoff_max, wait))
                continue
            first = text.strip().splitlines()[0][:200] if text.strip() else ""
            raise HttpError(f"the Wikidata Query Service refused the query: HTTP {resp.status_code} {first}",
                            resp.status_code)

    def _spend(self, start: float) -> float:
        now = time.monotonic()
        self.spent.append((now, now - start))
        self.stats["query_seconds"] += now - start
        return now - start

    def close(self) -> None:
        self.session.close()


def _uri_id(binding: dict[str, Any], key: str) -> str | None:
    v = binding.get(key)
    value = v.get("value") if isinstance(v, dict) else None
    return value.rsplit("/", 1)[-1] if isinstance(value, str) else None


def _text(binding: dict[str, Any], key: str) -> str | None:
    v = binding.get(key)
    value = v.get("value") if isinstance(v, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def rows_of(bindings: list[dict[str, Any]], config: NamesConfig, source: str) -> list[dict[str, Any]]:
    """One row per person (a person has a binding per birth, image, category and article), by
    birth then QID; the earliest birth, the first image and category by name."""
    people: dict[str, dict[str, Any]] = {}
    for b in bindings:
        qid = _uri_id(b, "person")
        if not qid or not qid.startswith("Q") or not qid[1:].isdigit():
            continue
        p = people.setdefault(qid, {"births": set(), "images": set(), "categories": set(), "title": None,
                                    "label": None})
        birth = year_of(_text(b, "birth"))
        if birth is not None:
            p["births"].add(birth)
        if (image := _text(b, "image")) is not None:
            p["images"].add(file_name(image))
        if (category := _text(b, "category")) is not None:
            p["categories"].add(category)
        p["title"] = p["title"] or _text(b, "title")
        label = _text(b, "personLabel")
        p["label"] = p["label"] or (label if label != qid else None)
    rows = [person_row(qid=qid, label=p["label"], title=p["title"],
                       birth_year=min(p["births"]) if p["births"] else None,
                       image=min(p["images"]) if p["images"] else None,
                       category=min(p["categories"]) if p["categories"] else None,
                       lang=config.http.lang, source=source) for qid, p in people.items()]
    rows.sort(key=_birth_order)
    return rows


def _birth_order(row: dict[str, Any]) -> tuple[int, int]:
    """Rows by birth year (unknown last), then QID: the order a slice's rows are kept in."""
    return (row["birth_year"] if row["birth_year"] is not None else 10**6, int(row["person_id"][1:]))


@dataclass
class SparqlResult:
    slices: int
    resumed_slices: int
    halvings: int
    route_splits: int
    stats: dict[str, float]


def _horizon() -> int:
    return dt.date(dt.date.today().year + 1, 1, 1).toordinal()


def query_people(config: NamesConfig, out_dir: Path, sink: PeopleSink, progress: bool = True) -> SparqlResult:
    """Every human that passes the filters, slice by slice, handed to `sink` (which tells people
    found twice apart); journalled, resumable. A resumed run indexes its journal and reads a done
    slice's rows back when it comes to it."""
    source = "wikidata-sparql"
    version = stage_key(results_hash(config.model_copy(update={"limit": None, "resolve_pages": False}), out_dir))
    journal = Journal(out_dir / JOURNAL_FILE, key=lambda r: r["id"], version=version)
    done: set[str] = set()  # the slices journalled, noted while the journal is indexed (one read)

    def slice_id(row: dict[str, Any]) -> str:
        done.add(row["id"])
        return row["id"]

    index = RowIndex()
    if journal.path.exists():
        index.add(journal.path, group=slice_id, keep=journal.current)
    client = WdqsClient(config.http)
    counts = collections.Counter()
    first = dt.date(config.born_after, 1, 1).toordinal() if config.born_after is not None else None
    horizon = _horizon()

    def take(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            sink.person(r)

    def full() -> bool:
        return sink.full

    def run(s: Slice) -> list[dict[str, Any]] | None:
        """A slice's rows (from the journal or WDQS); None when WDQS timed out on it."""
        if s.id in done:
            counts["resumed"] += 1
            return list(index.rows([s.id]))[-1]["rows"]
        try:
            bindings = client.select(build_query(config, s))
        except SparqlTimeout as exc:
            log.info("%s timed out (%s)", s.describe(), exc)
            return None
        rows = rows_of(bindings, config, source)
        journal.append({"id": s.id, "rows": rows, "bindings": len(bindings)})
        counts["slices"] += 1
        return rows

    def run_split(s: Slice) -> list[dict[str, Any]]:
        """A slice that cannot be narrowed further: its routes one by one."""
        counts["route_splits"] += 1
        out = []
        for route in ROUTES:
            part = Slice(s.start, s.end, route, s.undated)
            rows = run(part)
            if rows is None:
                raise HttpError(f"the Wikidata Query Service times out on {part.describe()} even alone: narrow "
                                "the filters (--has-image, --occupation, --citizenship) or read the dump "
                                "(--source wikidata-dump)")
            out += rows
        out.sort(key=_birth_order)
        return out

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[year]}"),
               TextColumn("{task.fields[people]:,} people"), TimeElapsedColumn())
    try:
        with Progress(*columns, disable=not progress, transient=True) as bar:
            lo = first if first is not None else FIRST_DATED
            task = bar.add_task("asking WDQS", total=horizon - lo, year="", people=0)
            # births before the dated windows (when no --born-after): one window, unbounded below
            if first is None and not full():
                s = Slice(None, FIRST_DATED)
                rows = run(s)
                take(rows if rows is not None else run_split(s))
            cursor, width = lo, INITIAL_DAYS
            ceiling: float | None = None  # after a timeout: grow past half the failed width only slowly
            while cursor < horizon and not full():
                # a window the journal already has, whole or as routes, is taken as it was
                known = [d for d in done if d.startswith(f"{cursor}:")]
                if known:
                    end = int(known[0].split(":")[1])
                    s = Slice(cursor, end)
                    rows = run(s) if s.id in done else run_split(s)
                else:
                    end = min(horizon, cursor + width)
                    s = Slice(cursor, end)
                    rows = run(s)
                    if rows is None:
                        if end - cursor > 1:
                            counts["halvings"] += 1
                            width = max(1, (end - cursor) // 2)
                            ceiling = width
                            continue
                        rows = run_split(s)
                    else:
                        aim = config.http.sparql_slice_rows
                        width = int(min(4 * width, max(1, width // 4, width * aim / max(1, len(rows)))))
                        if ceiling is not None:
                            width = max(1, min(width, int(ceiling)))
                            ceiling *= 1.25
                take(rows)
                cursor = end
                bar.update(task, completed=cursor - lo, year=dt.date.fromordinal(min(cursor, horizon - 1)).year,
                           people=sink.found)
            if first is None and not full():
                s = Slice(None, None, undated=True)
                rows = run(s)
                take(rows if rows is not None else run_split(s))
    finally:
        journal.close()
        client.close()
    return SparqlResult(counts["slices"], counts["resumed"], counts["halvings"], counts["route_splits"],
                        {k: float(v) for k, v in client.stats.items()})


def forget_sparql(out_dir: Path) -> None:
    (out_dir / JOURNAL_FILE).unlink(missing_ok=True)
