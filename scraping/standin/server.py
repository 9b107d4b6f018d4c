"""The offline Wikipedia stand-in: a real HTTP server on 127.0.0.1.

It speaks the subset of the MediaWiki Action API that wikifaces uses (query with
categorymembers, titles/pageids, redirects, normalisation, pageprops, pageimages, imageinfo,
userinfo; parse; Wikidata's wbgetentities), with the real field names, continuation and
batching limits, and serves image files as the upload host would. Faults are switchable per
test, and every request is logged with its timing and the concurrency it met.

    with StandinServer(build_corpus(60)) as server:
        server.http_config(contact="me@example.org")  # an HttpConfig pointing at it
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from scraping.config import THUMB_WIDTHS

from .corpus import Corpus

LOW_LIMIT, HIGH_LIMIT = 50, 500
TOKEN = "standin-token"  # a bearer token the stand-in grants apihighlimits to


@dataclass
class Fault:
    """Make matching requests misbehave. `endpoint`: api, commons, wikidata, upload or any;
    `match`: a substring of the path and query; `times`: how many requests it hits (None: all)."""

    kind: str  # 429, 503, 500, maxlag, maxlag_body, slow, slow_body, truncated, html, html_as_image,
    #            svg, gif_anim, bomb, oversized, not_image, corrupt_png, cmyk, exif_rotated, redirect,
    #            json (answer `body`, or `body(params)` when callable), formatversion1 (the normal
    #            answer in formatversion 1's shapes)
    endpoint: str = "any"
    match: str = ""
    times: int | None = 1
    retry_after: int | None = None
    delay: float = 0.0
    location: str = ""
    body: Any = None
    hits: int = 0


@dataclass
class LoggedRequest:
    start: float
    end: float
    endpoint: str
    path: str
    params: dict[str, str]
    status: int
    concurrent: int  # requests to the same endpoint in flight when this one started
    user_agent: str
    fault: str | None = None


@dataclass
class _State:
    corpus: Corpus
    faults: list[Fault] = field(default_factory=list)
    log: list[LoggedRequest] = field(default_factory=list)
    inflight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    render_cache: dict[tuple[str, int | None], bytes] = field(default_factory=dict)
    # Like some servers: resolve one redirect step a request, and report a target that is itself a
    # redirect as missing (so only asking again shows a loop).
    single_step_redirects: bool = False


def _norm(title: str) -> str:
    t = " ".join(unquote(title).replace("_", " ").split())
    if ":" in t:
        ns, rest = t.split(":", 1)
        if ns.capitalize() in ("File", "Category", "Image"):
            t = ns.capitalize() + ":" + (rest[:1].upper() + rest[1:])
    return t[:1].upper() + t[1:]


def _thumb_path(name: str, width: int | None) -> str:
    a = format(zlib.crc32(name.encode()) & 0xFF, "02x")
    if width is None:
        return f"/upload/wikipedia/commons/{a[0]}/{a}/{quote(name)}"
    return f"/upload/wikipedia/commons/thumb/{a[0]}/{a}/{quote(name)}/{width}px-{quote(name)}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        st = self.server.state
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        endpoint = {"/w/api.php": "api", "/commons/w/api.php": "commons",
                    "/wikidata/w/api.php": "wikidata"}.get(parts.path, "upload" if parts.path.startswith("/upload/")
                                                           else "other")
        with st.lock:
            concurrent = st.inflight.get(endpoint, 0) + 1
            st.inflight[endpoint] = concurrent
            fault = self._take_fault(endpoint)
        start = time.monotonic()
        status = 500
        try:
            status = self._serve(endpoint, parts.path, params, fault)
        except (BrokenPipeError, ConnectionResetError):
            status = 499
        except Exception as exc:  # a stand-in bug must show as a 500, not a dropped connection
            status = self._send(500, f"stand-in error: {exc!r}".encode(), "text/plain")
        finally:
            with st.lock:
                st.inflight[endpoint] -= 1
                st.log.append(LoggedRequest(start, time.monotonic(), endpoint, parts.path, params, status,
                                            concurrent, self.headers.get("User-Agent", ""),
                                            fault.kind if fault else None))

    def _take_fault(self, endpoint: str) -> Fault | None:
        for f in self.server.state.faults:
            if f.endpoint not in ("any", endpoint) or f.match not in self.path:
                continue
            if f.times is not None and f.hits >= f.times:
                continue
            f.hits += 1
            return f
        return None

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if "gzip" in self.headers.get("Accept-Encoding", "") and ctype.startswith("application/json"):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        return status

    def _json(self, obj: Any, headers: dict[str, str] | None = None) -> int:
        if getattr(self, "_formatversion1", False):
            obj = to_formatversion1(obj)
        return self._send(200, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

    def _api_error(self, code: str, info: str, headers: dict[str, str] | None = None) -> int:
        return self._json({"error": {"code": code, "info": info, "docref": "See /w/api.php for API usage."}},
                          {"MediaWiki-API-Error": code, **(headers or {})})

    # -- dispatch ---------------------------------------------------------------------------------
    def _serve(self, endpoint: str, path: str, params: dict[str, str], fault: Fault | None) -> int:
        ua = self.headers.get("User-Agent", "")
        if not ua or ua.startswith("python-requests"):
            return self._send(403, b"Please set a user-agent and respect our robot policy "
                              b"https://w.wiki/4wJS.", "text/plain")
        self._formatversion1 = fault is not None and fault.kind == "formatversion1"
        if fault is not None:
            done = self._apply_fault(fault, endpoint, params)
            if done is not None:
                return done
        if endpoint in ("api", "commons"):
            return self._action_api(endpoint, params, fault)
        if endpoint == "wikidata":
            return self._wikidata(params)
        if endpoint == "upload":
            return self._upload(path, fault)
        return self._send(404, b"not found", "text/plain")

    def _apply_fault(self, f: Fault, endpoint: str, params: dict[str, str]) -> int | None:
        """Faults that replace the response; None means serve normally (with a twist later)."""
        headers = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}
        if f.kind in ("429", "503", "500", "502", "404", "403"):
            body = b"<html><body><h1>Error</h1><p>Our servers are currently under maintenance.</p></body></html>"
            return self._send(int(f.kind), body, "text/html; charset=utf-8", headers)
        if f.kind == "maxlag":
            return self._api_error("maxlag", "Waiting for 10.64.0.1: 7 seconds lagged.",
                                   {"X-Database-Lag": "7", "Retry-After": str(f.retry_after or 5)})
        if f.kind == "maxlag_body":  # the error in the body only: HTTP 200, no MediaWiki-API-Error header
            return self._json({"error": {"code": "maxlag", "info": "Waiting for 10.64.0.1: 7 seconds lagged.",
                                         "lag": 7}, "servedby": "mw-api-ext.standin"})
        if f.kind == "json":
            return self._json(f.body(params) if callable(f.body) else f.body)
        if f.kind == "slow":
            time.sleep(f.delay)
            return None
        if f.kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 302
        if f.kind == "html":
            return self._send(200, b"<!DOCTYPE html><html><body>Error: 404 Not Found</body></html>", "text/html")
        if f.kind == "html_as_image":
            return self._send(200, b"<!DOCTYPE html><html><head><title>Wikimedia Error</title></head></html>",
                              "image/jpeg")
        if f.kind in ("svg", "gif_anim", "bomb", "not_image", "corrupt_png", "oversized", "cmyk", "exif_rotated"):
            body, ctype = _bad_body(f.kind)
            return self._send(200, body, ctype)
        return None  # slow_body and truncated act on the normal body

    # -- the Action API ---------------------------------------------------------------------------
    def _limit(self) -> int:
        return HIGH_LIMIT if self.headers.get("Authorization") == f"Bearer {TOKEN}" else LOW_LIMIT

    def _action_api(self, endpoint: str, params: dict[str, str], fault: Fault | None) -> int:
        if params.get("format") != "json":
            return self._send(200, b"<html>use format=json</html>", "text/html")
        action = params.get("action")
        if action == "parse" and endpoint == "api":
            return self._parse(params)
        if action != "query":
            return self._api_error("badvalue", f"Unrecognized value for parameter \"action\": {action}.")
        if params.get("meta") == "userinfo":
            rights = ["read", "apihighlimits"] if self._limit() == HIGH_LIMIT else ["read"]
            return self._json({"batchcomplete": True, "query": {"userinfo": {"id": 0, "name": "127.0.0.1",
                                                                              "anon": True, "rights": rights}}})
        if params.get("list") == "categorymembers":
            return self._categorymembers(params)
        if "titles" in params or "pageids" in params:
            return self._pages(endpoint, params)
        return self._api_error("invalidparammix", "Nothing to query.")

    def _categorymembers(self, params: dict[str, str]) -> int:
        corpus = self.server.state.corpus
        title = _norm(params.get("cmtitle", ""))
        types = set(params.get("cmtype", "page|subcat|file").split("|"))
        raw_limit = params.get("cmlimit", "10")
        max_limit = 5000 if self._limit() == HIGH_LIMIT else 500
        limit = max_limit if raw_limit == "max" else int(raw_limit)
        if limit > max_limit:
            return self._api_error("toomanyvalues", f"cmlimit may not be over {max_limit}.")
        members = []
        for m in corpus.categories.get(title, []):
            if m.startswith("Category:"):
                if "subcat" in types:
                    members.append({"pageid": 800_000 + sorted(corpus.categories).index(m), "ns": 14, "title": m})
            elif "page" in types:
                page = corpus.page(m)
                if page:
                    members.append({"pageid": page["pageid"], "ns": 0, "title": m})
        start = int(params["cmcontinue"].split("|")[-1]) if "cmcontinue" in params else 0
        chunk = members[start : start + limit]
        out: dict[str, Any] = {"batchcomplete": True, "query": {"categorymembers": chunk}}
        if start + limit < len(members):
            out["continue"] = {"cmcontinue": f"page|{start + limit:08x}|{start + limit}", "continue": "-||"}
        return self._json(out)

    def _pages(self, endpoint: str, params: dict[str, str]) -> int:
        corpus = self.server.state.corpus
        if "titles" in params:
            inputs = [t for t in params["titles"].split("|") if t]
        else:
            inputs = [corpus.pageids.get(int(p), f"#missing-{p}") for p in params["pageids"].split("|") if p]
        if len(inputs) > self._limit():
            return self._api_error("toomanyvalues",
                                   f"Too many values supplied for parameter \"titles\". The limit is {self._limit()}.")
        q: dict[str, Any] = {}
        normalized, redirects, titles = [], [], []
        for t in inputs:
            n = _norm(t)
            if n != t:
                normalized.append({"fromencoded": False, "from": t, "to": n})
            titles.append(n)
        resolved = []
        if "redirects" in params and self.server.state.single_step_redirects:
            for t in titles:
                nxt = corpus.redirects.get(t)
                if nxt is not None:
                    redirects.append({"from": t, "to": nxt})
                resolved.append(nxt if nxt is not None else t)
        elif "redirects" in params:
            for t in titles:
                seen = {t}
                cur = t
                while cur in corpus.redirects:
                    nxt = corpus.redirects[cur]
                    if not any(r["from"] == cur for r in redirects):
                        redirects.append({"from": cur, "to": nxt})
                    if nxt in seen:
                        cur = None
                        break
                    seen.add(nxt)
                    cur = nxt
                if cur is not None:
                    resolved.append(cur)
        else:
            resolved = titles
        props = set(params.get("prop", "").split("|"))
        pages, seen_titles = [], set()
        for t in resolved:
            if t in seen_titles:
                continue
            seen_titles.add(t)
            pages.append(self._page_obj(endpoint, t, props, params))
        if normalized:
            q["normalized"] = normalized
        if redirects:
            q["redirects"] = redirects
        out: dict[str, Any] = {"batchcomplete": True, "query": q}
        # pageimages answers for at most pilimit pages per request; the rest continue.
        if "pageimages" in props:
            max_pi = 100 if self._limit() == HIGH_LIMIT else 50
            raw = params.get("pilimit", "50")
            pilimit = max_pi if raw == "max" else min(int(raw), max_pi)
            start = int(params.get("picontinue", "0"))
            with_image = [p for p in pages if "pageimage" in p]
            for k, p in enumerate(with_image):
                if not start <= k < start + pilimit:
                    p.pop("pageimage", None)
                    p.pop("original", None)
            if start + pilimit < len(with_image):
                out["continue"] = {"picontinue": str(start + pilimit), "continue": "||"}
                out.pop("batchcomplete")
        if "imageinfo" in props and params.get("iiurlwidth"):
            start = int(params.get("iicontinue", "0"))
            infos = [p for p in pages if "imageinfo" in p]
            for k, p in enumerate(infos):
                if not start <= k < start + 50:
                    p.pop("imageinfo")
            if start + 50 < len(infos):
                out["continue"] = {"iicontinue": str(start + 50), "continue": "||"}
                out.pop("batchcomplete", None)
        q["pages"] = pages
        return self._json(out)

    def _page_obj(self, endpoint: str, title: str, props: set[str], params: dict[str, str]) -> dict[str, Any]:
        corpus = self.server.state.corpus
        if title.startswith("#missing-"):
            return {"pageid": int(title.split("-")[1]), "missing": True}
        if "|" in title or "<" in title or "[" in title or not title.strip():
            return {"title": title, "invalidreason": "The requested page title contains invalid characters.",
                    "invalid": True}
        if title.startswith("File:"):
            return self._file_obj(endpoint, title, params)
        page = corpus.page(title) if endpoint == "api" else None
        if page is None or (self.server.state.single_step_redirects and title in corpus.redirects):
            return {"ns": 0, "title": title, "missing": True}
        obj: dict[str, Any] = {"pageid": page["pageid"], "ns": 0, "title": title}
        if "pageprops" in props:
            pp: dict[str, str] = {}
            wanted = set(params.get("ppprop", "wikibase_item|disambiguation").split("|"))
            if page.get("qid") and "wikibase_item" in wanted:
                pp["wikibase_item"] = page["qid"]
            if page.get("disambiguation") and "disambiguation" in wanted:
                pp["disambiguation"] = ""
            if pp:
                obj["pageprops"] = pp
        if "pageimages" in props and page.get("image"):
            info = corpus.files[page["image"]]
            free_only = params.get("pilicense", "free") == "free"
            if not (free_only and info.nonfree):
                piprop = set(params.get("piprop", "thumbnail|name").split("|"))
                if "name" in piprop:
                    obj["pageimage"] = info.name
                if "original" in piprop:
                    obj["original"] = {"source": self._url(_thumb_path(info.name, None)),
                                       "width": info.width, "height": info.height}
        return obj

    def _file_obj(self, endpoint: str, title: str, params: dict[str, str]) -> dict[str, Any]:
        corpus = self.server.state.corpus
        name = title[len("File:"):].replace(" ", "_")
        info = corpus.files.get(name)
        hosted_here = info is not None and (info.nonfree == (endpoint == "api"))
        if not hosted_here:
            if info is not None and endpoint == "api":  # a Commons file seen from the wiki
                obj: dict[str, Any] = {"ns": 6, "title": title, "missing": True, "known": True,
                                       "imagerepository": "shared"}
            else:
                return {"ns": 6, "title": title, "missing": True, "imagerepository": ""}
        else:
            obj = {"pageid": 60_000 + sorted(corpus.files).index(name), "ns": 6, "title": title,
                   "imagerepository": "local"}
        assert info is not None
        width_param = params.get("iiurlwidth")
        ii: dict[str, Any] = {
            "size": 0, "width": info.width, "height": info.height,
            "url": self._url(_thumb_path(name, None)),
            "descriptionurl": f"https://commons.wikimedia.org/wiki/{quote(title.replace(' ', '_'))}",
            "sha1": format(zlib.crc32(name.encode()), "040x"), "mime": info.mime,
        }
        if info.size:
            ii["size"] = info.size
        if width_param:
            w = int(width_param)
            if w < info.width:
                ii["thumburl"] = self._url(_thumb_path(name, w))
                ii["thumbwidth"] = w
                ii["thumbheight"] = round(info.height * w / info.width)
            else:
                ii["thumburl"], ii["thumbwidth"], ii["thumbheight"] = ii["url"], info.width, info.height
        if "extmetadata" in params.get("iiprop", ""):
            md = {
                "ObjectName": info.name.rsplit(".", 1)[0].replace("_", " "),
                "Artist": info.artist_html,
                "Credit": info.credit_html,
                "LicenseShortName": info.licence,
                "UsageTerms": info.licence if info.licence_url else "Public domain",
                "AttributionRequired": "true" if info.attribution_required else "false",
                "Copyrighted": "True" if info.licence_url or info.nonfree else "False",
            }
            if info.licence_url:
                md["LicenseUrl"] = info.licence_url
            if info.nonfree:
                md["NonFree"] = "true"
            wanted = params.get("iiextmetadatafilter")
            keys = set(wanted.split("|")) if wanted else set(md)
            ii["extmetadata"] = {k: {"value": v, "source": "commons-desc-page", "hidden": ""}
                                 for k, v in md.items() if k in keys}
        obj["imageinfo"] = [ii]
        return obj

    def _parse(self, params: dict[str, str]) -> int:
        corpus = self.server.state.corpus
        title = _norm(params.get("page", ""))
        if "redirects" in params:
            title = corpus.redirects.get(title, title)
        html = corpus.list_pages.get(title)
        if html is None:
            return self._api_error("missingtitle", "The page you specified doesn't exist.")
        page = corpus.page(title) or {"pageid": 0}
        return self._json({"parse": {"title": title, "pageid": page["pageid"], "text": html}})

    def _wikidata(self, params: dict[str, str]) -> int:
        corpus = self.server.state.corpus
        if params.get("action") != "wbgetentities":
            return self._api_error("badvalue", "Unrecognized value for parameter \"action\".")
        ids = [i for i in params.get("ids", "").split("|") if i]
        if len(ids) > self._limit():
            return self._api_error("toomanyvalues", f"Too many values for \"ids\". The limit is {self._limit()}.")
        by_qid = {p.qid: p for p in corpus.people}
        other = {qid for _, qid in corpus.other_pages.values()}
        entities: dict[str, Any] = {}
        for qid in ids:
            if qid in by_qid:
                p = by_qid[qid]
                claims: dict[str, Any] = {"P31": [_claim_item("Q5")]}
                if p.birth_year is not None:
                    claims["P569"] = [_claim_time(p.birth_year)]
                entities[qid] = {"type": "item", "id": qid, "claims": claims}
            elif qid in other:
                entities[qid] = {"type": "item", "id": qid, "claims": {"P31": [_claim_item("Q6256")]}}
            else:
                entities[qid] = {"id": qid, "missing": ""}
        return self._json({"entities": entities, "success": 1})

    # -- the upload host --------------------------------------------------------------------------
    def _upload(self, path: str, fault: Fault | None) -> int:
        corpus = self.server.state.corpus
        m = re.match(r"^/upload/wikipedia/commons/(?:thumb/)?[0-9a-f]/[0-9a-f]{2}/([^/]+)(?:/(\d+)px-[^/]+)?$", path)
        if not m:
            return self._send(404, b"<html>404 Not Found</html>", "text/html")
        name, width = unquote(m.group(1)), m.group(2)
        if width is not None and int(width) not in THUMB_WIDTHS:  # as the real upload host does
            return self._send(429, b"<html>Use a standard thumbnail size</html>", "text/html")
        if name not in corpus.files:
            return self._send(404, b"<html>404 Not Found</html>", "text/html")
        key = (name, int(width) if width else None)
        st = self.server.state
        with st.lock:
            body = st.render_cache.get(key)
        if body is None:
            body = corpus.render(name, key[1])
            with st.lock:
                st.render_cache[key] = body
        if fault is not None and fault.kind == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return 200
        if fault is not None and fault.kind == "slow_body":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            step = max(1, len(body) // 20)
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(fault.delay / 20)
            return 200
        return self._send(200, body, "image/jpeg", {"Cache-Control": "public, max-age=31536000"})

    def _url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"


def to_formatversion1(obj: Any) -> Any:
    """An answer as MediaWiki's formatversion 1 shapes it: `pages` an object keyed by page id
    (negative for missing pages), flags as empty strings (absent when false), text under `*`."""
    if isinstance(obj, list):
        return [to_formatversion1(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if v is True:
            out[k] = ""
        elif v is False:
            continue
        elif k == "pages" and isinstance(v, list):
            out[k] = {str(p.get("pageid", -1 - i)): to_formatversion1(p) for i, p in enumerate(v)}
        elif k == "text" and isinstance(v, str):
            out[k] = {"*": v}
        else:
            out[k] = to_formatversion1(v)
    return out


def _claim_item(qid: str) -> dict[str, Any]:
    return {"mainsnak": {"snaktype": "value", "property": "P31", "datavalue": {
        "value": {"entity-type": "item", "numeric-id": int(qid[1:]), "id": qid}, "type": "wikibase-entityid"},
        "datatype": "wikibase-item"}, "type": "statement", "rank": "normal"}


def _claim_time(year: int) -> dict[str, Any]:
    return {"mainsnak": {"snaktype": "value", "property": "P569", "datavalue": {
        "value": {"time": f"+{year:04d}-03-01T00:00:00Z", "timezone": 0, "before": 0, "after": 0,
                  "precision": 11, "calendarmodel": "http://www.wikidata.org/entity/Q1985727"},
        "type": "time"}, "datatype": "time"}, "type": "statement", "rank": "normal"}


def _bad_body(kind: str) -> tuple[bytes, str]:
    """Bodies that are not the JPEG they claim to be."""
    import io

    import numpy as np
    from PIL import Image

    if kind == "svg":
        return (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="500" height="500">'
                b'<circle cx="250" cy="250" r="200"/></svg>', "image/svg+xml")
    if kind == "gif_anim":
        frames = [Image.fromarray(np.full((200, 200, 3), c, np.uint8)) for c in (0, 128, 255)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return buf.getvalue(), "image/gif"
    if kind == "bomb":
        return _bomb_png(), "image/png"
    if kind == "not_image":
        return bytes(range(256)) * 64, "image/jpeg"
    if kind == "corrupt_png":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buf, "PNG")
        data = bytearray(buf.getvalue())
        data[200:4000] = b"\x00" * 3800
        return bytes(data), "image/png"
    if kind in ("cmyk", "exif_rotated"):
        from wikifaces.samples import available_photos, load_rgb

        photo = load_rgb(next(path for p, path in available_photos(faces=True) if p.id == "grace-hopper"))
        im = Image.fromarray(photo)
        buf = io.BytesIO()
        if kind == "cmyk":
            im.convert("CMYK").save(buf, "JPEG", quality=90)
        else:  # stored lying on its side, with EXIF orientation 6 ("rotate 90 CW to view")
            exif = Image.Exif()
            exif[0x0112] = 6
            im.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif)
        return buf.getvalue(), "image/jpeg"
    if kind == "oversized":
        return b"\xff\xd8\xff\xe0" + b"\x00" * (60 * 1024 * 1024), "image/jpeg"
    raise ValueError(kind)


_BOMB: bytes | None = None


def _bomb_png(side: int = 12_000) -> bytes:
    """A valid grey PNG of side x side pixels (144 MP) that compresses to about 140 kB."""
    global _BOMB
    if _BOMB is None:
        import struct

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

        comp = zlib.compressobj(9)
        row = b"\x00" * (side + 1)  # filter byte + pixels
        idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
        _BOMB = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return _BOMB


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class StandinServer:
    """Start with `start()` or as a context manager; `url` is http://127.0.0.1:<port>."""

    def __init__(self, corpus: Corpus, port: int = 0) -> None:
        self.corpus = corpus
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.state = _State(corpus)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> StandinServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ----------------------------------------------------------------------------
    def add_fault(self, kind: str, endpoint: str = "any", match: str = "", times: int | None = 1,
                  retry_after: int | None = None, delay: float = 0.0, location: str = "", body: Any = None) -> Fault:
        fault = Fault(kind, endpoint, match, times, retry_after, delay, location, body)
        with self._server.state.lock:
            self._server.state.faults.append(fault)
        return fault

    def resolve_one_redirect_step(self, on: bool = True) -> None:
        """Answer as servers that resolve one redirect step a request and call a redirect target missing."""
        self._server.state.single_step_redirects = on

    def clear_faults(self) -> None:
        with self._server.state.lock:
            self._server.state.faults.clear()

    @property
    def log(self) -> list[LoggedRequest]:
        with self._server.state.lock:
            return list(self._server.state.log)

    def clear_log(self) -> None:
        with self._server.state.lock:
            self._server.state.log.clear()

    def endpoints(self) -> dict[str, Any]:
        """Keyword arguments for HttpConfig that point every endpoint at this server."""
        return {
            "api_url": f"{self.url}/w/api.php",
            "commons_api_url": f"{self.url}/commons/w/api.php",
            "wikidata_api_url": f"{self.url}/wikidata/w/api.php",
            "allowed_download_hosts": (self.host,),
        }
