"""The polite HTTP client: one User-Agent with contact, serial rate-limited API calls with
maxlag, retries that honour Retry-After (tenacity), an on-disk API cache (requests-cache),
at most N concurrent downloads under a bandwidth cap, an allow-list of download hosts that
redirects must respect too, and a size cap on every body.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import requests
import requests_cache
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from wikifaces.core.errors import UserError

from .config import HttpConfig

log = logging.getLogger("wikifaces.scraping")


class HttpError(UserError):
    """A request failed for good; `reason` is short and goes into the row (or, when the stage
    cannot go on, is the one line the user sees)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RetryableError(HttpError):
    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason, status)
        self.retry_after = retry_after


class DisallowedHost(HttpError):
    pass


class TooLarge(HttpError):
    pass


class BadUrl(HttpError):
    """A URL whose path would change on the way (dot segments): never requested."""


class UnexpectedResponse(HttpError):
    """The API answered in a shape we do not understand; the message names the request."""


class ApiError(HttpError):
    """The API answered with an error object that retrying will not fix."""

    def __init__(self, code: str, info: str) -> None:
        super().__init__(f"API error {code}: {info}")
        self.code = code


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class TokenBucket:
    """Bytes per second across all download threads."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = rate  # one second's burst
        self.tokens = rate
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def consume(self, n: int) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= min(n, self.capacity):
                    self.tokens -= n
                    return
                need = (min(n, self.capacity) - self.tokens) / self.rate
            time.sleep(need)


@dataclass
class Download:
    url: str  # the final URL after redirects
    status: int
    content_type: str
    body: bytes


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.lower()


def api_error(data: Any) -> dict[str, Any] | None:
    """The error object of an API response (`error`, or the first of `errors` with
    errorformat=plaintext/html), or None. Whatever the HTTP status and headers said."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if error:
        return error if isinstance(error, dict) else {"code": "unknown", "info": str(error)}
    errors = data.get("errors")
    if errors:
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):
            return {"code": first.get("code", "unknown"), "info": first.get("text") or first.get("*") or ""}
        return {"code": "unknown", "info": str(first)}
    return None


def cacheable(resp: requests.Response) -> bool:
    """Only a plain success is stored: HTTP 200, no `MediaWiki-API-Error` header, a JSON body with
    no top-level `error`/`errors`. A cached error would answer every retry and every later run."""
    if resp.status_code != 200 or "MediaWiki-API-Error" in resp.headers:
        return False
    try:
        return api_error(resp.json()) is None
    except ValueError:
        return False


def check_path(url: str) -> None:
    """Refuse a URL whose path has dot segments (also percent-encoded): HTTP clients and servers
    remove them, so `a/../../etc/passwd.jpg` would fetch another path than the one built."""
    path = urlsplit(url).path
    for segment in path.split("/"):
        if unquote(segment) in (".", ".."):
            raise BadUrl(f"the URL path {path[:120]!r} has a dot segment: it would fetch another path than the "
                         "one built from the file's URL")


class PoliteClient:
    """Talks to the MediaWiki Action API and the upload host as the config says."""

    def __init__(self, config: HttpConfig, cache_path: str | os.PathLike[str] | None = None) -> None:
        config.require_contact()
        self.config = config
        headers = {"User-Agent": config.user_agent(), "Accept-Encoding": "gzip, deflate"}
        token = os.environ.get(config.token_env, "").strip()
        self.token = bool(token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if config.cache and cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            self.api_session: requests.Session = requests_cache.CachedSession(
                str(cache_path), backend="sqlite", expire_after=config.cache_expire_days * 86400,
                allowable_codes=(200,), allowable_methods=("GET",), filter_fn=cacheable,
            )
        else:
            self.api_session = requests.Session()
        self.api_session.headers.update(headers)
        self._dl_headers = {k: v for k, v in headers.items() if k != "Authorization"}
        self._local = threading.local()
        self._api_lock = threading.Lock()
        self._last_api = 0.0
        self._dl_slots = threading.BoundedSemaphore(config.max_concurrent_downloads)
        self._bucket = TokenBucket(config.download_bytes_per_second)
        self.stats: Counter[str] = Counter()
        self.warnings: list[str] = []  # continuations cut short and the like; stages record them
        self._stats_lock = threading.Lock()

    # -- retries ----------------------------------------------------------------------------
    def _retrying(self) -> Retrying:
        cfg = self.config

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (state.attempt_number - 1))
            backoff = random.uniform(backoff / 2, backoff)  # full jitter, bounded below
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                return min(cfg.backoff_max, retry_after) + random.uniform(0, 0.1)
            return backoff

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self._count("retries")
            log.info("retrying after %s (attempt %d)", exc, state.attempt_number)

        return Retrying(
            retry=retry_if_exception_type(RetryableError), stop=stop_after_attempt(cfg.max_attempts),
            wait=wait, before_sleep=before_sleep, reraise=True,
        )

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    # -- the API ------------------------------------------------------------------------------
    def api(self, params: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        """One Action API GET (JSON, formatversion 2, maxlag), retried as the config says."""
        full = {"format": "json", "formatversion": "2", "maxlag": str(self.config.maxlag), **params}
        full = {k: v for k, v in full.items() if v is not None}
        target = url or self.config.api_url
        for attempt in self._retrying():
            with attempt:
                return self._api_once(target, full)
        raise AssertionError("unreachable")  # pragma: no cover

    def _api_once(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._api_lock:  # API calls are serial, whatever the caller's threads do
            req = self.api_session.prepare_request(requests.Request("GET", url, params=params))
            cache = getattr(self.api_session, "cache", None)
            refresh = self.config.refresh_cache
            cached = cache is not None and not refresh and cache.contains(request=req)
            if not cached:  # paced start to start: the rate asked, unless the answers take longer
                gap = 1.0 / self.config.api_requests_per_second - (time.monotonic() - self._last_api)
                if gap > 0:
                    time.sleep(gap)
                self._last_api = time.monotonic()
            extra = {"force_refresh": True} if cache is not None and refresh else {}
            try:
                resp = self.api_session.send(req, timeout=(self.config.connect_timeout, self.config.read_timeout),
                                             **extra)
            except requests.Timeout as exc:
                raise RetryableError("timeout") from exc
            except requests.ConnectionError as exc:
                raise RetryableError(f"connection failed: {_short(exc)}") from exc
            from_cache = getattr(resp, "from_cache", False)
            self._count("api_cache_hits" if from_cache else "api_requests")
        if resp.status_code in (429, 503) or resp.status_code >= 500:
            raise RetryableError(f"HTTP {resp.status_code}", resp.status_code,
                                 parse_retry_after(resp.headers.get("Retry-After")))
        if resp.status_code != 200:
            raise HttpError(f"HTTP {resp.status_code}", resp.status_code)
        try:
            data = resp.json()
        except ValueError as exc:
            raise RetryableError("the API answered with something that is not JSON") from exc
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"the API answered {type(data).__name__} JSON, not an object, to {resp.url}")
        error = api_error(data)
        if error is not None:
            if from_cache:  # stored by an older version: it must not answer again
                cache.delete(requests=[req])  # type: ignore[union-attr]
            code = str(error.get("code", "unknown"))
            info = str(error.get("info", ""))
            if code in ("maxlag", "ratelimited", "readonly", "internal_api_error_DBQueryError"):
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if code == "maxlag" and retry_after is None:
                    retry_after = 5.0
                raise RetryableError(f"API {code}", 200, retry_after)
            raise ApiError(code, info)
        return data

    def query(self, params: dict[str, Any], url: str | None = None,
              enough: Callable[[list[dict[str, Any]]], bool] | None = None) -> list[dict[str, Any]]:
        """`action=query` with continuation followed; returns every response's `query` block.
        `enough(blocks)` true stops following (a capped list needs no more pages).

        Continuation always ends: one that only pages older revisions of a file (`iistart`) is not
        followed (we ask for the current one), and one that repeats a token or passes
        `max_continuations` pages stops with a warning naming the query; the blocks so far are kept."""
        blocks = []
        cont: dict[str, Any] = {}
        seen: set[str] = set()
        while True:
            data = self.api({"action": "query", **params, **cont}, url)
            block = data.get("query")
            if isinstance(block, dict):
                blocks.append(block)
            elif block is not None:
                raise UnexpectedResponse(f"`query` is {type(block).__name__}, not an object, in the answer to "
                                         f"{_describe(params)} at {url or self.config.api_url}")
            nxt = data.get("continue")
            if not nxt or (enough is not None and enough(blocks)):
                return blocks
            if not isinstance(nxt, dict):
                self._warn(f"a `continue` that is not an object for {_describe(params)}: not followed")
                return blocks
            nxt = {k: v for k, v in nxt.items() if k != "iistart"}  # older revisions: never wanted
            if set(nxt) <= {"continue"}:
                return blocks
            token = json.dumps(nxt, sort_keys=True, default=str)
            if token in seen:
                self._warn(f"the API repeated the continuation {token[:200]} for {_describe(params)}: "
                           f"stopped after {len(blocks)} pages, keeping what they gave")
                return blocks
            if len(seen) + 1 >= self.config.max_continuations:
                self._warn(f"{_describe(params)} passed {self.config.max_continuations} pages of continuation: "
                           f"stopped, keeping the {len(blocks)} pages so far (raise max_continuations for more)")
                return blocks
            seen.add(token)
            cont = nxt

    def warn(self, message: str) -> None:
        """Log a warning and keep it for the stage's counts (the receipt and the artifact show it)."""
        self._warn(message)

    def _warn(self, message: str) -> None:
        log.warning(message)
        with self._stats_lock:
            self.warnings.append(message)

    # -- downloads -------------------------------------------------------------------------------
    def _dl_session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self._dl_headers)
        return session

    def check_host(self, url: str) -> None:
        """The scheme and host must be allowed, and the path must be the one written."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise DisallowedHost(f"disallowed scheme {parts.scheme!r}")
        if _host(url) not in {h.lower() for h in self.config.allowed_download_hosts}:
            raise DisallowedHost(f"host {_host(url)!r} is not in the download allow-list")
        check_path(url)

    def download(self, url: str) -> Download:
        """GET an image body from an allowed host, following redirects only to allowed hosts."""
        self.check_host(url)
        for attempt in self._retrying():
            with attempt, self._dl_slots:
                return self._download_once(url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _download_once(self, url: str) -> Download:
        cfg = self.config
        session = self._dl_session()
        deadline = time.monotonic() + cfg.download_deadline
        for _ in range(6):
            self.check_host(url)
            try:
                resp = session.get(url, stream=True, allow_redirects=False,
                                   timeout=(cfg.connect_timeout, cfg.read_timeout))
            except requests.Timeout as exc:
                raise RetryableError("timeout") from exc
            except requests.ConnectionError as exc:
                raise RetryableError(f"connection failed: {_short(exc)}") from exc
            self._count("downloads")
            with resp:
                if resp.is_redirect:
                    location = resp.headers.get("Location", "")
                    url = urljoin(url, location)
                    continue
                if resp.status_code in (429, 503) or resp.status_code >= 500:
                    raise RetryableError(f"HTTP {resp.status_code}", resp.status_code,
                                         parse_retry_after(resp.headers.get("Retry-After")))
                if resp.status_code != 200:
                    raise HttpError(f"HTTP {resp.status_code}", resp.status_code)
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > cfg.max_response_bytes:
                    raise TooLarge(f"body of {int(declared):,} bytes exceeds the cap of {cfg.max_response_bytes:,}")
                chunks: list[bytes] = []
                size = 0
                try:
                    for chunk in resp.iter_content(64 * 1024):
                        size += len(chunk)
                        if size > cfg.max_response_bytes:
                            raise TooLarge(f"body exceeds the cap of {cfg.max_response_bytes:,} bytes")
                        if time.monotonic() > deadline:
                            raise RetryableError(f"body not complete within {cfg.download_deadline:.0f} s")
                        self._bucket.consume(len(chunk))
                        chunks.append(chunk)
                except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                    raise RetryableError(f"truncated body: {_short(exc)}") from exc
                except requests.Timeout as exc:
                    raise RetryableError("timeout while reading the body") from exc
                body = b"".join(chunks)
                if declared and declared.isdigit() and len(body) != int(declared):
                    raise RetryableError(f"truncated body: {len(body)} of {declared} bytes")
                self._count("download_bytes", len(body))
                return Download(url, resp.status_code, resp.headers.get("Content-Type", ""), body)
        raise HttpError("too many redirects")

    def close(self) -> None:
        self.api_session.close()


def _describe(params: dict[str, Any]) -> str:
    """A query named by what it asks (`list=categorymembers cmtitle=Category:X`), for messages."""
    keys = ("list", "prop", "generator", "titles", "cmtitle", "page", "ids", "pageids")
    shown = [f"{k}={str(params[k])[:80]}" for k in keys if params.get(k)]
    return "the query " + (" ".join(shown) or "(no parameters)")


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Read timed out", "IncompleteRead"):
        if marker in text:
            return marker
    return text[:120]
