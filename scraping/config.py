"""Configuration of the scraping stages: frozen pydantic models, validated before any work."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

THUMB_WIDTHS = (250, 330, 500, 960, 1280, 1920)  # Wikimedia's standard thumbnail steps (2026)


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
    allowed_download_hosts: tuple[str, ...] = ("upload.wikimedia.org",)
    lang: str = "en"
    contact: str | None = Field(
        default=None,
        description="Contact for the User-Agent (an e-mail or URL); required for the real sites.",
    )
    maxlag: Annotated[int, Field(ge=1, le=60)] = 5
    api_requests_per_second: Annotated[float, Field(gt=0, le=50)] = 5.0
    max_concurrent_downloads: Annotated[int, Field(ge=1, le=8)] = 2
    download_bytes_per_second: Annotated[int, Field(ge=10_000)] = 4_000_000
    max_response_bytes: Annotated[int, Field(ge=1024)] = 50_000_000
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    read_timeout: Annotated[float, Field(gt=0)] = 30.0
    download_deadline: Annotated[float, Field(gt=0)] = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    backoff_initial: Annotated[float, Field(ge=0)] = 1.0
    backoff_max: Annotated[float, Field(ge=0)] = 120.0
    token_env: str = "WIKIFACES_API_TOKEN"
    cache: bool = True
    cache_expire_days: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("api_url", "commons_api_url", "wikidata_api_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @property
    def uses_real_sites(self) -> bool:
        return not all(is_loopback_url(u) for u in (self.api_url, self.commons_api_url, self.wikidata_api_url))

    def user_agent(self) -> str:
        from wikifaces import __version__

        contact = self.contact or "offline stand-in"
        return f"wikifaces/{__version__} ({contact}) python-requests"

    def require_contact(self) -> None:
        """Refuse to talk to the real sites without a way for their operators to reach us."""
        if self.uses_real_sites and not (self.contact and self.contact.strip()):
            raise ValueError(
                "a contact is required to query Wikipedia: set --contact (an e-mail address or a URL "
                "where you can be reached), e.g. --contact 'you@example.org'. Wikimedia's User-Agent "
                "policy asks every client for one: https://meta.wikimedia.org/wiki/User-Agent_policy"
            )


class NamesConfig(BaseModel):
    """Stage `names`: who to collect."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    http: HttpConfig = HttpConfig()

    @model_validator(mode="after")
    def _some_source(self) -> NamesConfig:
        if not (self.categories or self.list_pages or self.names_file):
            raise ValueError("give at least one source: categories, list_pages or names_file")
        return self

    @property
    def wants_wikidata(self) -> bool:
        return self.born_after is not None or self.check_humans

    @property
    def check_humans(self) -> bool:
        return self.humans_only if self.humans_only is not None else bool(self.list_pages)


class ImagesConfig(BaseModel):
    """Stage `images`: which portraits to fetch and how to check them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    thumb_width: Literal[250, 330, 500, 960, 1280, 1920, "original"] = 960
    allow_nonfree: bool = False
    min_side: Annotated[int, Field(ge=1)] = 64
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    takedown_file: Path | None = None
    retry_failed: bool = False
    limit: Annotated[int | None, Field(ge=1)] = None
    http: HttpConfig = HttpConfig()
