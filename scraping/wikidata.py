"""Wikidata's people: the filters of the Wikidata sources, read from an entity (the dump) or
from a SPARQL result row, into one row shape. Both sources give the same rows for the same people.

What `wdt:` means in SPARQL (best-rank values: preferred statements if any, else normal ones,
never deprecated) is what the entity readers here mean too, so the sources agree.
"""

from __future__ import annotations

import re
from typing import Any, Protocol
from urllib.parse import unquote

import msgspec
import numpy as np

from .config import NamesConfig

HUMAN = "Q5"


class IdSet:
    """Wikidata ids seen, ~10 bytes each (a set of strings takes ~100): the numbers of Q-ids in a
    sorted array, the newest in a small set merged into it now and then; other ids in a set."""

    MERGE = 4096

    def __init__(self) -> None:
        self._sorted = np.empty(0, np.int64)
        self._recent: set[int] = set()
        self._other: set[str] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent) + len(self._other)

    def add(self, qid: str) -> bool:
        """Add an id; whether it was new."""
        if not (qid[:1] == "Q" and qid[1:].isdigit()):
            if qid in self._other:
                return False
            self._other.add(qid)
            return True
        n = int(qid[1:])
        if n in self._recent:
            return False
        i = int(np.searchsorted(self._sorted, n))
        if i < len(self._sorted) and self._sorted[i] == n:
            return False
        self._recent.add(n)
        if len(self._recent) >= max(self.MERGE, len(self._sorted) >> 6):  # the set stays ~1/64 of the array
            new = np.sort(np.fromiter(self._recent, np.int64, len(self._recent)))
            self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, new), new)  # a copy, no sort
            self._recent.clear()
        return True


class PeopleSink(Protocol):
    """Where a Wikidata source hands its rows as it finds them (names' writer): a source that finds
    millions of people never holds them."""

    @property
    def full(self) -> bool:
        """The limit of people is reached: the source may stop."""

    @property
    def found(self) -> int:
        """Different people handed so far."""

    def person(self, row: dict[str, Any]) -> None: ...

    def rejected(self, row: dict[str, Any]) -> None: ...


_YEAR = re.compile(r"^([+-]?)(\d+)-")


def best_claims(claims: Any, prop: str) -> list[dict[str, Any]]:
    """A property's best-rank statements, as `wdt:` sees them."""
    values = claims.get(prop) if isinstance(claims, dict) else None
    if isinstance(values, dict):  # never in Wikidata's output, but tolerate an object keyed by id
        values = list(values.values())
    statements = [c for c in values if isinstance(c, dict) and c.get("rank") != "deprecated"] \
        if isinstance(values, list) else []
    preferred = [c for c in statements if c.get("rank") == "preferred"]
    return preferred or statements


def claim_value(claim: dict[str, Any]) -> Any:
    snak = claim.get("mainsnak")
    if not isinstance(snak, dict) or snak.get("snaktype") != "value" or not isinstance(snak.get("datavalue"), dict):
        return None
    return snak["datavalue"].get("value")


def year_of(time: Any) -> int | None:
    """The year of a Wikidata time (`+1952-03-11T00:00:00Z`) or an xsd:dateTime (`1952-03-11T...`)."""
    m = _YEAR.match(time) if isinstance(time, str) else None
    if not m:
        return None
    return -int(m.group(2)) if m.group(1) == "-" else int(m.group(2))


def item_ids(claims: Any, prop: str) -> list[str]:
    out = []
    for c in best_claims(claims, prop):
        v = claim_value(c)
        if isinstance(v, dict) and isinstance(v.get("id"), str):
            out.append(v["id"])
    return out


def birth_years(claims: Any) -> list[int]:
    years = []
    for c in best_claims(claims, "P569"):
        v = claim_value(c)
        y = year_of(v.get("time")) if isinstance(v, dict) else None
        if y is not None:
            years.append(y)
    return years


def file_name(value: str) -> str:
    """A Commons file name as pageimages writes it (underscores), from P18's value or a
    Special:FilePath URL (percent-encoded, spaces)."""
    if "/Special:FilePath/" in value:
        value = unquote(value.rsplit("/Special:FilePath/", 1)[1])
    return "_".join(value.strip().split())


def person_row(*, qid: str, label: str | None, title: str | None, birth_year: int | None, image: str | None,
               category: str | None, lang: str, source: str) -> dict[str, Any]:
    """One person in names.jsonl's shape; `lead_image` is Wikidata's image (P18), so the images
    stage needs no second look-up. `title` is the article's title, or the label without one."""
    lead = file_name(image) if image else None
    return {"person_id": qid, "title": title or label or qid, "label": label or qid, "wiki_title": title,
            "pageid": None, "lang": lang, "source": source, "sources": [source], "inputs": [],
            "lead_image": lead, "lead_image_width": None, "lead_image_height": None, "image": lead,
            "commons_category": category, "birth_year": birth_year}


def passes(config: NamesConfig, *, birth_years: list[int], has_image: bool, has_category: bool,
           sitelinks: set[str], occupations: list[str], citizenships: list[str]) -> tuple[bool, int | None]:
    """(whether a human passes the filters, the birth year to record): the SPARQL query's rules.
    With --born-after, the earliest birth date at or after it (the window SPARQL finds them in)."""
    years = [y for y in birth_years if config.born_after is None or y >= config.born_after]
    if config.born_after is not None and not years:
        return False, None
    birth = min(years) if years else None
    ok = ((has_image or has_category or f"{config.http.lang}wiki" in sitelinks)
          and (has_image or not config.has_image)
          and (has_category or not config.has_commons_category)
          and (config.has_article is None or f"{config.has_article}wiki" in sitelinks)
          and (not config.occupations or bool(set(config.occupations) & set(occupations)))
          and (not config.citizenships or bool(set(config.citizenships) & set(citizenships))))
    return ok, birth


class _Value(msgspec.Struct):
    value: Any = None


class _Snak(msgspec.Struct):
    snaktype: str = ""
    datavalue: _Value | None = None


class _Statement(msgspec.Struct):
    mainsnak: _Snak | None = None
    rank: str = "normal"


class _Text(msgspec.Struct):
    value: str | None = None


class _Sitelink(msgspec.Struct):
    title: str | None = None


PROPERTIES = ("P31", "P569", "P18", "P373", "P106", "P27")


def _best(statements: list[_Statement]) -> list[Any]:
    """Best-rank values (as `wdt:`): preferred statements if any, else normal ones."""
    kept = [s for s in statements if s.rank != "deprecated"]
    preferred = [s for s in kept if s.rank == "preferred"]
    return [s.mainsnak.datavalue.value for s in preferred or kept
            if s.mainsnak is not None and s.mainsnak.snaktype == "value" and s.mainsnak.datavalue is not None]


def _ids(values: list[Any]) -> list[str]:
    return [v["id"] for v in values if isinstance(v, dict) and isinstance(v.get("id"), str)]


class EntityReader:
    """Decodes a dump line straight into the few fields the filters read (msgspec structs: every
    other field is skipped without building Python objects, about 8x faster than a full parse),
    and gives the person's row or None."""

    def __init__(self, config: NamesConfig, source: str) -> None:
        self.config = config
        self.source = source
        self.lang = config.http.lang
        self.wikis = list(dict.fromkeys([f"{self.lang}wiki"] + ([f"{config.has_article}wiki"]
                                                               if config.has_article else [])))
        claims = msgspec.defstruct("Claims", [(p, list[_Statement], msgspec.field(default_factory=list))
                                              for p in PROPERTIES])
        labels = msgspec.defstruct("Labels", [(f"l{i}", _Text | None, msgspec.field(default=None, name=lg))
                                              for i, lg in enumerate(dict.fromkeys([self.lang, "mul"]))])
        sites = msgspec.defstruct("Sitelinks", [(f"s{i}", _Sitelink | None, msgspec.field(default=None, name=w))
                                                for i, w in enumerate(self.wikis)])
        entity = msgspec.defstruct("Entity", [
            ("type", str, ""), ("id", str, ""), ("labels", labels, msgspec.field(default_factory=labels)),
            ("claims", claims, msgspec.field(default_factory=claims)),
            ("sitelinks", sites, msgspec.field(default_factory=sites))])
        self._decoder = msgspec.json.Decoder(entity)

    def decode(self, line: bytes) -> Any:
        """The entity's struct; msgspec.DecodeError (a subclass of ValueError) when the line is not
        an entity of the dump's shape."""
        return self._decoder.decode(line)

    def person(self, e: Any) -> dict[str, Any] | None:
        c = e.claims
        if e.type != "item" or HUMAN not in _ids(_best(c.P31)):
            return None
        sitelinks = {w for i, w in enumerate(self.wikis) if (sl := getattr(e.sitelinks, f"s{i}")) is not None
                     and isinstance(sl.title, str)}
        images = sorted(file_name(v) for v in _best(c.P18) if isinstance(v, str) and v.strip())
        categories = sorted(v for v in _best(c.P373) if isinstance(v, str) and v.strip())
        years = [y for v in _best(c.P569) if isinstance(v, dict) and (y := year_of(v.get("time"))) is not None]
        ok, birth = passes(self.config, birth_years=years, has_image=bool(images), has_category=bool(categories),
                           sitelinks=sitelinks, occupations=_ids(_best(c.P106)), citizenships=_ids(_best(c.P27)))
        if not ok:
            return None
        label = next((t.value for t in (e.labels.l0, getattr(e.labels, "l1", None))
                      if t is not None and isinstance(t.value, str)), None)
        home = e.sitelinks.s0
        return person_row(qid=e.id, label=label, title=home.title if home is not None else None, birth_year=birth,
                          image=images[0] if images else None, category=categories[0] if categories else None,
                          lang=self.lang, source=self.source)
