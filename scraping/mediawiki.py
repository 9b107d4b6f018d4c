"""MediaWiki and Wikidata calls, batched as the API allows, with the API's own field names."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup

from .http import PoliteClient, UnexpectedResponse
from .titles import category_title, normalise_title
from .wikidata import best_claims, birth_years, claim_value, file_name, item_ids

NAMESPACES = {
    "media", "special", "talk", "user", "user talk", "wikipedia", "wikipedia talk", "project", "file", "file talk",
    "image", "mediawiki", "mediawiki talk", "template", "template talk", "help", "help talk", "category",
    "category talk", "portal", "portal talk", "draft", "draft talk", "timedtext", "module", "module talk",
    "wp", "wt", "cat", "h", "mos", "t", "p", "wikt", "commons", "d", "s", "q", "n", "w", "m",
}
SKIP_SECTIONS = {
    "see also", "references", "notes", "external links", "further reading", "bibliography", "sources",
    "citations", "footnotes", "notes and references", "explanatory notes", "general references",
}
SKIP_SELECTORS = (
    ".navbox", ".navbox-styles", ".vertical-navbox", ".sidebar", ".infobox", ".reflist", ".references",
    ".mw-references-wrap", "sup.reference", ".mw-editsection", ".hatnote", ".ambox", ".metadata", ".catlinks",
    ".toc", "#toc", ".portalbox", ".sistersitebox", ".side-box", ".shortdescription", "figure", ".thumb",
    ".gallery", ".noprint", "style", "script", ".mw-empty-elt", ".authority-control",
)


def items(block: Any, key: str) -> list[dict[str, Any]]:
    """The objects under `key` of a response block, whatever the formatversion: a list (2) or an
    object keyed by page id (1). Anything that is not an object is left out."""
    value = block.get(key) if isinstance(block, dict) else None
    if isinstance(value, dict):
        value = list(value.values())
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def flag(obj: dict[str, Any], name: str) -> bool:
    """A boolean flag in either formatversion: `"missing": true` (2) or `"missing": ""` (1)."""
    return name in obj and obj[name] is not False


def text_of(value: Any) -> str | None:
    """A text field in either formatversion: `"text": "..."` (2) or `"text": {"*": "..."}` (1)."""
    if isinstance(value, dict):
        value = value.get("*")
    return value if isinstance(value, str) else None


def batched(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def batch_size(client: PoliteClient) -> int:
    """50 titles a request, or 500 when the token grants `apihighlimits`."""
    if not client.token:
        return 50
    cached = getattr(client, "_batch_size", None)
    if cached is None:
        blocks = client.query({"meta": "userinfo", "uiprop": "rights"})
        rights = blocks[0].get("userinfo", {}).get("rights", []) if blocks else []
        cached = 500 if "apihighlimits" in rights else 50
        client._batch_size = cached  # type: ignore[attr-defined]
    return cached


# -- categories ---------------------------------------------------------------------------------
def category_members(client: PoliteClient, category: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(page title, category it was found in) for every article in a category and, to `depth`,
    its subcategories. Each category is visited once, so cycles end."""
    root = category_title(category)
    queue = [(root, 0)]
    visited = {root}
    limit = "max"
    while queue:
        cat, level = queue.pop(0)
        cmtype = "page|subcat" if level < depth else "page"
        for block in client.query({"list": "categorymembers", "cmtitle": cat, "cmtype": cmtype, "cmlimit": limit}):
            for m in items(block, "categorymembers"):
                title = m.get("title")
                if not isinstance(title, str):
                    continue
                if m.get("ns") == 0:
                    yield title, cat
                elif m.get("ns") == 14 and level < depth and normalise_title(title) not in visited:
                    visited.add(normalise_title(title))
                    queue.append((normalise_title(title), level + 1))


# -- list pages -----------------------------------------------------------------------------------
def list_page_links(client: PoliteClient, title: str) -> list[str]:
    """Article links in the body of a "List of ..." page (see `parse_list_html`)."""
    title = normalise_title(title)
    data = client.api({"action": "parse", "page": title, "prop": "text", "redirects": "1"})
    parsed = data.get("parse")
    html = text_of(parsed.get("text")) if isinstance(parsed, dict) else None
    if html is None:
        shape = sorted(parsed) if isinstance(parsed, dict) else type(parsed).__name__
        raise UnexpectedResponse(f"action=parse for {title!r} at {client.config.api_url} gave no article text "
                                 f"(parse: {shape})")
    return parse_list_html(html)


def parse_list_html(html: str) -> list[str]:
    """Titles of main-namespace articles linked from an article body: not navboxes, infoboxes,
    hatnotes, references, figures, "See also" and later sections, red links, files, categories
    or any other namespace. Old (`mw-headline`) and current (`mw-heading`) markup both work."""
    soup = BeautifulSoup(html, "html.parser")
    root = soup.select_one(".mw-parser-output") or soup
    for sel in SKIP_SELECTORS:
        for el in root.select(sel):
            el.decompose()
    skipping = False
    for child in list(root.children):
        if getattr(child, "name", None) is None:
            continue
        heading = None
        if child.name == "h2":
            heading = child
        elif child.name == "div" and "mw-heading2" in (child.get("class") or []):
            heading = child.find("h2")
        if heading is not None:
            skipping = heading.get_text(" ", strip=True).lower() in SKIP_SECTIONS
        if skipping:
            child.decompose()
    titles: list[str] = []
    seen: set[str] = set()
    for a in root.find_all("a", href=True):
        title = _article_title(a)
        if title and title not in seen:
            seen.add(title)
            titles.append(title)
    return titles


def _article_title(a: Any) -> str | None:
    classes = set(a.get("class") or [])
    if classes & {"new", "external", "mw-file-description", "image", "extiw", "internal"}:
        return None
    href = a["href"]
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    if parts.path.startswith("/wiki/"):
        raw = parts.path[len("/wiki/") :]
    elif parts.path.startswith("./") and not parts.query:  # Parsoid (REST) HTML
        raw = parts.path[2:]
    else:
        return None  # /w/index.php?...redlink=1, action=edit, fragments
    title = normalise_title(unquote(raw))
    if not title or re.search(r"[<>\[\]{}|#]", title):
        return None
    if ":" in title and title.split(":", 1)[0].strip().lower() in NAMESPACES:
        return None
    return title


# -- resolution --------------------------------------------------------------------------------------
@dataclass
class Resolved:
    """What the API says about one input title."""

    input: str
    status: Literal["ok", "missing", "invalid", "disambiguation", "redirect_loop"]
    title: str | None = None
    pageid: int | None = None
    qid: str | None = None
    lead_image: str | None = None
    lead_image_size: tuple[int, int] | None = None
    reason: str = ""


MAX_REDIRECT_HOPS = 8


@dataclass
class _Answers:
    """What the API said about titles, merged across batches and follow-up requests."""

    normalized: dict[str, str] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, block: dict[str, Any]) -> None:
        for key, target in (("normalized", self.normalized), ("redirects", self.redirects)):
            for n in items(block, key):
                if isinstance(n.get("from"), str) and isinstance(n.get("to"), str):
                    target[n["from"]] = n["to"]
        for page in items(block, "pages"):
            if isinstance(page.get("title"), str):
                self.pages.setdefault(page["title"], {}).update(page)

    def follow(self, title: str) -> tuple[str, int, bool]:
        """(where the title's redirects lead, how many hops, whether they loop)."""
        cur = self.normalized.get(title, title)
        seen = {cur}
        hops = 0
        while cur in self.redirects:
            cur = self.redirects[cur]
            hops += 1
            if cur in seen:
                return cur, hops, True
            seen.add(cur)
        return cur, hops, False


def resolve_titles(client: PoliteClient, titles: Sequence[str], lead_images: str = "free") -> dict[str, Resolved]:
    """Canonical page, QID and lead image for each input title, `batch_size` titles a request,
    redirects followed (loops detected), normalisation applied, disambiguations flagged.

    The API resolves one redirect step per request; a chain that ends at a page reported missing
    or still a redirect is asked about again, hop by hop, so a loop is seen as a loop
    (`redirect_loop`) wherever the server stops resolving it."""
    answers = _Answers()
    params = {"redirects": "1", "prop": "pageprops|pageimages", "ppprop": "wikibase_item|disambiguation",
              "piprop": "original|name", "pilicense": lead_images, "pilimit": "max"}

    def ask(batch_titles: Sequence[str]) -> None:
        for batch in batched(list(batch_titles), batch_size(client)):
            for block in client.query({"titles": "|".join(batch), **params}):
                answers.add(block)

    ask(titles)
    asked = set(titles)
    for _ in range(MAX_REDIRECT_HOPS):
        ends = set()
        for title in titles:
            end, hops, loops = answers.follow(title)
            page = answers.pages.get(end)
            unresolved = page is None or flag(page, "missing") or flag(page, "redirect")
            if hops and not loops and unresolved and end not in asked:
                ends.add(end)
        if not ends:
            break
        asked |= ends
        ask(sorted(ends))
    return {title: _resolve_one(title, answers) for title in titles}


def _resolve_one(title: str, answers: _Answers) -> Resolved:
    cur, hops, loops = answers.follow(title)
    if loops:
        return Resolved(title, "redirect_loop", reason=f"redirects loop back to {cur!r}")
    page = answers.pages.get(cur)
    if page is None:
        return Resolved(title, "missing", reason="the API returned no page for it")
    if flag(page, "invalid"):
        return Resolved(title, "invalid", reason=str(page.get("invalidreason", "invalid title")))
    if flag(page, "missing"):
        return Resolved(title, "missing", title=cur, reason="a redirect to a page that does not exist" if hops
                        else "no such page")
    if flag(page, "redirect"):
        return Resolved(title, "redirect_loop", title=cur,
                        reason=f"redirects more than {MAX_REDIRECT_HOPS} times without reaching a page")
    props = page.get("pageprops") if isinstance(page.get("pageprops"), dict) else {}
    if "disambiguation" in props:
        return Resolved(title, "disambiguation", title=cur, pageid=_int(page.get("pageid")),
                        reason="a disambiguation page, not a person")
    pageid = _int(page.get("pageid"))
    if pageid is None:
        return Resolved(title, "missing", title=cur, reason="the API gave the page without a page id")
    original = page.get("original") if isinstance(page.get("original"), dict) else {}
    width, height = _int(original.get("width")), _int(original.get("height"))
    qid = props.get("wikibase_item")
    image = page.get("pageimage")
    return Resolved(title, "ok", title=cur, pageid=pageid, qid=qid if isinstance(qid, str) else None,
                    lead_image=image if isinstance(image, str) and image else None,
                    lead_image_size=(width, height) if width and height else None)


def _int(value: Any) -> int | None:
    """An integer field that may come as a string (formatversion 1) or not at all."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- Wikidata -----------------------------------------------------------------------------------------
@dataclass
class WikidataFacts:
    human: bool | None
    birth_year: int | None


def entity_claims(client: PoliteClient, qids: Sequence[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(QID, its claims) for each item, None for a missing one; `batch_size` ids a `wbgetentities` request."""
    for batch in batched(sorted(set(qids)), batch_size(client)):
        data = client.api({"action": "wbgetentities", "ids": "|".join(batch), "props": "claims"},
                          url=client.config.wikidata_api_url)
        entities = data.get("entities")
        if not isinstance(entities, dict):
            raise UnexpectedResponse(f"wbgetentities at {client.config.wikidata_api_url} gave no `entities` "
                                     f"object for {', '.join(batch[:3])}{' ...' if len(batch) > 3 else ''}")
        for qid, entity in entities.items():
            if not isinstance(entity, dict) or flag(entity, "missing"):
                yield qid, None
            else:
                yield qid, entity.get("claims") if isinstance(entity.get("claims"), dict) else {}


def wikidata_facts(client: PoliteClient, qids: Sequence[str]) -> dict[str, WikidataFacts]:
    """Instance-of-human (P31 = Q5) and birth year (P569) per QID."""
    out: dict[str, WikidataFacts] = {}
    for qid, claims in entity_claims(client, qids):
        if claims is None:
            out[qid] = WikidataFacts(None, None)
            continue
        kinds = item_ids(claims, "P31")
        years = birth_years(claims)
        out[qid] = WikidataFacts("Q5" in kinds if kinds else None, years[0] if years else None)
    return out


# -- files ---------------------------------------------------------------------------------------------
def imageinfo_params(width: int | None) -> dict[str, str]:
    """`prop=imageinfo` with what a row needs: URL, size, MIME, licence and author, a thumbnail."""
    params = {"prop": "imageinfo", "iiprop": "url|size|sha1|mime|extmetadata",
              "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|Credit|AttributionRequired|NonFree"
                                     "|UsageTerms|Copyrighted|ObjectName"}
    if width is not None:
        params["iiurlwidth"] = str(width)
    return params


def file_name_of(title: str) -> str:
    """"File:Grace Hopper.jpg" -> "Grace_Hopper.jpg" (pageimages' spelling, which rows use)."""
    return "_".join(title.split(":", 1)[1].split()) if ":" in title else "_".join(title.split())


def _generated_files(client: PoliteClient, params: dict[str, str], limit: int) -> list[tuple[str, dict[str, Any]]]:
    """(file name, imageinfo) for the files a generator yields, in its order, at most `limit`;
    pages only as many as the cap needs. Files without imageinfo (missing) are left out."""
    def files(blocks: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
        out: dict[str, tuple[int, str, dict[str, Any]]] = {}
        for n, block in enumerate(blocks):
            for page in items(block, "pages"):
                info = items(page, "imageinfo")
                title = page.get("title")
                if not info or not isinstance(title, str) or page.get("ns") not in (6, "6"):
                    continue
                index = _int(page.get("index"))
                order = (n * 100_000 + index) if index is not None else n * 100_000 + len(out)
                out.setdefault(title, (order, file_name_of(title), info[0]))
        return sorted(out.values(), key=lambda t: t[0])

    blocks = client.query(params, url=client.config.commons_api_url, enough=lambda b: len(files(b)) >= limit)
    return [(name, info) for _, name, info in files(blocks)[:limit]]


def category_files(client: PoliteClient, category: str, limit: int, width: int | None, depth: int = 0
                   ) -> list[tuple[str, dict[str, Any]]]:
    """Files in a Commons category (and, to `depth`, its subcategories; each visited once, so cycles
    end) with their imageinfo: one request a category (listing and imageinfo together)."""
    root = category_title(category)
    queue, visited = [(root, 0)], {root}
    out: dict[str, dict[str, Any]] = {}
    while queue and len(out) < limit:
        cat, level = queue.pop(0)
        params = {"generator": "categorymembers", "gcmtitle": cat, "gcmtype": "file",
                  "gcmlimit": str(min(limit, 500)), **imageinfo_params(width)}
        for name, info in _generated_files(client, params, limit - len(out)):
            out.setdefault(name, info)
        if level < depth:
            for block in client.query({"list": "categorymembers", "cmtitle": cat, "cmtype": "subcat",
                                       "cmlimit": "max"}, url=client.config.commons_api_url):
                for m in items(block, "categorymembers"):
                    sub = m.get("title")
                    if isinstance(sub, str) and normalise_title(sub) not in visited:
                        visited.add(normalise_title(sub))
                        queue.append((normalise_title(sub), level + 1))
    return list(out.items())[:limit]


def depicted_files(client: PoliteClient, qid: str, limit: int, width: int | None) -> list[tuple[str, dict[str, Any]]]:
    """Commons files whose structured data say they depict `qid` (P180), with their imageinfo: one
    search request (CirrusSearch's `haswbstatement`, File namespace)."""
    if not re.fullmatch(r"Q[1-9]\d*", qid):
        return []
    params = {"generator": "search", "gsrsearch": f"haswbstatement:P180={qid}", "gsrnamespace": "6",
              "gsrlimit": str(min(limit, 500)), **imageinfo_params(width)}
    return _generated_files(client, params, limit)


def wikidata_media(client: PoliteClient, qids: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
    """(images (P18), Commons categories (P373)) per QID, best-rank values; missing items left out."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for qid, claims in entity_claims(client, qids):
        if claims is None:
            continue
        strings = {p: [v.strip() for c in best_claims(claims, p) if isinstance(v := claim_value(c), str)
                       and v.strip()] for p in ("P18", "P373")}
        out[qid] = ([file_name(v) for v in strings["P18"]], strings["P373"])
    return out


def image_infos(client: PoliteClient, files: Sequence[str], width: int | None) -> dict[str, dict[str, Any]]:
    """imageinfo (url, size, sha1, mime, extmetadata, a thumbnail at `width`) per file name
    ("Name.jpg", as pageimages gives it). Asks Commons first, then the wiki for local files."""
    out: dict[str, dict[str, Any]] = {}
    pending = list(dict.fromkeys(files))
    for url in (client.config.commons_api_url, client.config.api_url):
        if not pending:
            break
        missing: list[str] = []
        for batch in batched(pending, min(50, batch_size(client))):
            titles = {f"File:{name}": name for name in batch}
            found: dict[str, dict[str, Any]] = {}
            params = {"titles": "|".join(titles), **imageinfo_params(width)}
            answers = _Answers()
            for block in client.query(params, url=url):
                answers.add(block)
            normalized = answers.normalized
            for title, page in answers.pages.items():
                info = items(page, "imageinfo")
                if info:
                    found[title] = info[0]
            for t, name in titles.items():
                info = found.get(normalized.get(t, t))
                if info is None:
                    missing.append(name)
                else:
                    out[name] = info
        pending = missing
    return out
