"""Configuration of the scraping stages: frozen pydantic models, validated before any work."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wikifaces.core.errors import BadConfig
from wikifaces.core.identity import execution_only

from .titles import category_title, normalise_title

# Wikimedia's thumbnail steps (2025-26): any other width is answered with HTTP 429.
THUMB_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
ThumbWidth = Literal[20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840, "original"]
# The Robot policy (April 2025) for the upload host: 2 connections, 25 Mbit/s averaged over 10 s.
POLICY_DOWNLOADS = 2
POLICY_BYTES_PER_SECOND = 25_000_000 // 8
WIKIMEDIA_DOMAINS = ("wikimedia.org", "wikipedia.org", "wikidata.org")


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(BaseModel):
    """Endpoints and politeness. The defaults are the real Wikipedia, Commons and Wikidata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_url: str = "https://en.wikipedia.org/w/api.php"
    commons_api_url: str = "https://commons.wikimedia.org/w/api.php"
    wikidata_api_url: str = "https://www.wikidata.org/w/api.php"
    sparql_url: str = "https://query.wikidata.org/sparql"
    allowed_download_hosts: tuple[str, ...] = ("upload.wikimedia.org",)
    lang: str = "en"
    # How we talk to the wiki (who we are, how fast, how patient, what we cache) never changes what
    # a stage finds: these fields are execution-only, outside the stage's results hash.
    contact: str | None = execution_only(
        None, description="Contact for the User-Agent (an e-mail or URL); required for the real sites.",
    )
    maxlag: Annotated[int, Field(ge=1, le=60)] = execution_only(5)
    api_requests_per_second: Annotated[float, Field(gt=0, le=50)] = execution_only(5.0)
    max_concurrent_downloads: Annotated[int, Field(ge=1, le=8)] = execution_only(POLICY_DOWNLOADS)
    # 24 Mbit/s, under the policy's 25
    download_bytes_per_second: Annotated[int, Field(ge=10_000)] = execution_only(3_000_000)
    beyond_policy: bool = execution_only(
        False,
        description="Allow more than Wikimedia's robot policy (2 downloads, 25 Mbit/s) on its hosts: only with "
                    "Wikimedia's permission.",
    )
    max_response_bytes: Annotated[int, Field(ge=1024)] = 50_000_000
    connect_timeout: Annotated[float, Field(gt=0)] = execution_only(10.0)
    read_timeout: Annotated[float, Field(gt=0)] = execution_only(30.0)
    download_deadline: Annotated[float, Field(gt=0)] = execution_only(120.0)
    max_attempts: Annotated[int, Field(ge=1, le=20)] = execution_only(6)
    backoff_initial: Annotated[float, Field(ge=0)] = execution_only(1.0)
    backoff_max: Annotated[float, Field(ge=0)] = execution_only(120.0)
    token_env: str = execution_only("WIKIFACES_API_TOKEN")
    cache: bool = execution_only(True)
    cache_expire_days: Annotated[float, Field(ge=0)] = execution_only(30.0)
    refresh_cache: bool = execution_only(False, description="Ask the API again and overwrite the cached answers.")
    max_continuations: Annotated[int, Field(ge=1)] = 10_000  # pages of one query before we stop following
    # The Wikidata Query Service's limits (2025-26): 60 s a query, 60 s of query time a minute per IP and
    # User-Agent, 30 errors a minute. We keep under them with a margin.
    sparql_seconds_per_minute: Annotated[float, Field(gt=0, le=60)] = execution_only(
        50.0, description="Query time to spend per minute (WDQS allows 60).")
    sparql_errors_per_minute: Annotated[int, Field(ge=1, le=30)] = execution_only(
        20, description="Stop when this many WDQS errors (timeouts included) fall within a minute (WDQS allows 30).")
    sparql_timeout: Annotated[float, Field(gt=0)] = execution_only(65.0)  # WDQS stops a query at 60 s
    sparql_slice_rows: Annotated[int, Field(ge=1)] = execution_only(
        20_000, description="Results a SPARQL slice aims at: birth-date windows grow or shrink towards it.")

    @field_validator("api_url", "commons_api_url", "wikidata_api_url", "sparql_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @model_validator(mode="after")
    def _within_policy(self) -> HttpConfig:
        hosts = [h.split(":")[0].lower() for h in self.allowed_download_hosts]
        wikimedia = [h for h in hosts if h.endswith(WIKIMEDIA_DOMAINS)]
        over = (self.max_concurrent_downloads > POLICY_DOWNLOADS
                or self.download_bytes_per_second > POLICY_BYTES_PER_SECOND)
        if wikimedia and over and not self.beyond_policy:
            raise ValueError(
                f"{self.max_concurrent_downloads} downloads at {self.download_bytes_per_second:,} bytes/s exceeds "
                f"Wikimedia's robot policy for {wikimedia[0]} ({POLICY_DOWNLOADS} connections, 25 Mbit/s = "
                f"{POLICY_BYTES_PER_SECOND:,} bytes/s); set beyond_policy (--beyond-policy) only if Wikimedia "
                "has given you permission: https://wikitech.wikimedia.org/wiki/Robot_policy")
        return self

    @property
    def uses_real_sites(self) -> bool:
        return not all(is_loopback_url(u) for u in (self.api_url, self.commons_api_url, self.wikidata_api_url,
                                                    self.sparql_url))

    def user_agent(self) -> str:
        from wikifaces.core.version import __version__

        contact = self.contact or "offline stand-in"
        return f"wikifaces/{__version__} ({contact}) python-requests"

    def require_contact(self) -> None:
        """Refuse to talk to the real sites without a way for their operators to reach us."""
        if self.uses_real_sites and not (self.contact and self.contact.strip()):
            raise BadConfig(
                "a contact is required to query Wikipedia: set --contact (an e-mail address or a URL "
                "where you can be reached), e.g. --contact 'you@example.org'. Wikimedia's User-Agent "
                "policy asks every client for one: https://meta.wikimedia.org/wiki/User-Agent_policy"
            )


NameSource = Literal["wikipedia", "wikidata-sparql", "wikidata-dump"]
QID = re.compile(r"^Q[1-9]\d*$")


class NamesConfig(BaseModel):
    """Stage `names`: who to collect. Source `wikipedia`: categories, list pages and names files;
    `wikidata-sparql`: every human on Wikidata with an image, a Commons category or an article, by the
    Query Service; `wikidata-dump`: the same people read from Wikidata's JSON dump (`dump_file`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: NameSource = "wikipedia"
    categories: tuple[str, ...] = ()
    category_depth: Annotated[int, Field(ge=0, le=10)] = 0
    list_pages: tuple[str, ...] = ()
    names_file: Path | None = None
    born_after: Annotated[int | None, Field(ge=0, le=3000)] = None
    humans_only: bool | None = Field(
        default=None,
        description="Keep only Wikidata humans (P31=Q5); default: on when list pages are a source.",
    )
    lead_images: Literal["free", "any"] = "free"
    limit: Annotated[int | None, Field(ge=1)] = None
    # the Wikidata sources' filters (a human passes when it has an image, a Commons category or an
    # article on the chosen Wikipedia, and every filter given)
    dump_file: Path | None = None
    has_image: bool = Field(default=False, description="Only people with a Wikidata image (P18).")
    has_commons_category: bool = Field(default=False, description="Only people with a Commons category (P373).")
    has_article: str | None = Field(default=None, description="Only people with an article in this language.")
    occupations: tuple[str, ...] = Field(default=(), description="Only people with one of these occupations (P106).")
    citizenships: tuple[str, ...] = Field(default=(), description="Only citizens of one of these countries (P27).")
    resolve_pages: bool = Field(
        default=True, description="Look up the page id of each article (50 titles a request), and its lead image "
                                  "where Wikidata has no image.")
    dump_chunk_bytes: Annotated[int, Field(ge=4096)] = execution_only(1 << 20)
    dump_checkpoint_seconds: Annotated[float, Field(ge=0)] = execution_only(
        2.0, description="Journal the dump's progress this often (a killed run redoes at most this much).")
    http: HttpConfig = HttpConfig()

    @field_validator("occupations", "citizenships")
    @classmethod
    def _qids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [q for q in v if not QID.match(q.strip())]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a Wikidata item id (Q followed by digits, e.g. Q82594)")
        return tuple(sorted({q.strip() for q in v}, key=lambda q: int(q[1:])))

    @field_validator("has_article")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z][a-z0-9-]{1,15}", v):
            raise ValueError(f"{v!r} is not a Wikipedia language code (e.g. en, de, zh-yue)")
        return v

    @field_validator("categories")
    @classmethod
    def _category_titles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        """One spelling per category, so `Living_people` and `Living people` are one request and one hash."""
        return tuple(dict.fromkeys(category_title(c) for c in v if c.strip()))

    @field_validator("list_pages")
    @classmethod
    def _list_titles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalise_title(t) for t in v if t.strip()))

    @model_validator(mode="after")
    def _some_source(self) -> NamesConfig:
        wikipedia = self.categories or self.list_pages or self.names_file
        if self.source == "wikipedia":
            if not wikipedia:
                raise ValueError("give at least one source: categories, list_pages or names_file (or choose the "
                                 "source wikidata-sparql or wikidata-dump)")
            wikidata_only = [n for n in ("dump_file", "has_image", "has_commons_category", "has_article",
                                         "occupations", "citizenships") if getattr(self, n)]
            if wikidata_only:
                raise ValueError(f"{wikidata_only[0]} belongs to the Wikidata sources: choose source "
                                 "wikidata-sparql or wikidata-dump")
            return self
        if wikipedia:
            raise ValueError("categories, list pages and names files belong to the source wikipedia, "
                             f"not {self.source}")
        if self.source == "wikidata-dump" and self.dump_file is None:
            raise ValueError("the source wikidata-dump reads a dump: give its file (latest-all.json.gz or .bz2)")
        if self.source == "wikidata-sparql" and self.dump_file is not None:
            raise ValueError("a dump file is read by the source wikidata-dump, not wikidata-sparql")
        return self

    @property
    def wants_wikidata(self) -> bool:
        return self.born_after is not None or self.check_humans

    @property
    def check_humans(self) -> bool:
        return self.humans_only if self.humans_only is not None else bool(self.list_pages)


Route = Literal["lead", "p18", "category", "depicts"]
ROUTES: tuple[Route, ...] = ("lead", "p18", "category", "depicts")


class ImagesConfig(BaseModel):
    """Stage `images`: which portraits to fetch and how to check them. A person's candidates come,
    in this order, from their article's lead image, their Wikidata image (P18), the files of their
    Commons category (P373) and the Commons files that depict them (P180), up to
    `max_images_per_person`; a file reached by several routes is one candidate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_images_per_person: Annotated[int, Field(ge=1, le=500)] = 20
    routes: tuple[Route, ...] = ROUTES
    category_depth: Annotated[int, Field(ge=0, le=5)] = 0
    thumb_width: ThumbWidth = 960
    allow_nonfree: bool = False
    min_side: Annotated[int, Field(ge=1)] = 64
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    takedown_file: Path | None = None
    retry_failed: bool = False
    limit: Annotated[int | None, Field(ge=1)] = None
    # People listed and fetched at a time (a multiple of 50 keeps requests full). A person costs ~30 kB
    # while their chunk is open (listings with imageinfo, rows; measured by bench/scale.py), so a
    # chunk of 1,000 ~30 MB; the rows are the same whatever the chunk.
    chunk_people: Annotated[int, Field(ge=1, le=100_000)] = execution_only(1000)
    http: HttpConfig = HttpConfig()

    @field_validator("routes")
    @classmethod
    def _route_order(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one route: lead, p18, category, depicts")
        return tuple(r for r in ROUTES if r in v)  # one spelling per choice, in the fixed order
