"""MediaWiki and Wikidata calls, batched as the API allows, with the API's own field names."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup

from .http import PoliteClient

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


def normalise_title(title: str) -> str:
    """MediaWiki's title normalisation for the main namespace: underscores to spaces, runs of
    whitespace collapsed, first letter upper case."""
    t = " ".join(title.replace("_", " ").split())
    return t[:1].upper() + t[1:]


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
    root = category if category.lower().startswith("category:") else f"Category:{category}"
    root = "Category:" + normalise_title(root.split(":", 1)[1])
    queue = [(root, 0)]
    visited = {root}
    limit = "max"
    while queue:
        cat, level = queue.pop(0)
        cmtype = "page|subcat" if level < depth else "page"
        for block in client.query({"list": "categorymembers", "cmtitle": cat, "cmtype": cmtype, "cmlimit": limit}):
            for m in block.get("categorymembers", []):
                if m.get("ns") == 0:
                    yield m["title"], cat
                elif m.get("ns") == 14 and level < depth and m["title"] not in visited:
                    visited.add(m["title"])
                    queue.append((m["title"], level + 1))


# -- list pages -----------------------------------------------------------------------------------
def list_page_links(client: PoliteClient, title: str) -> list[str]:
    """Article links in the body of a "List of ..." page (see `parse_list_html`)."""
    data = client.api({"action": "parse", "page": title, "prop": "text", "redirects": "1"})
    return parse_list_html(data["parse"]["text"])


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
    status: str  # ok, missing, invalid, disambiguation, redirect_loop
    title: str | None = None
    pageid: int | None = None
    qid: str | None = None
    lead_image: str | None = None
    lead_image_size: tuple[int, int] | None = None
    reason: str = ""


def resolve_titles(client: PoliteClient, titles: Sequence[str], lead_images: str = "free") -> dict[str, Resolved]:
    """Canonical page, QID and lead image for each input title, `batch_size` titles a request,
    redirects followed (loops detected), normalisation applied, disambiguations flagged."""
    out: dict[str, Resolved] = {}
    size = batch_size(client)
    for batch in batched(list(titles), size):
        normalized: dict[str, str] = {}
        redirects: dict[str, str] = {}
        pages: dict[str, dict[str, Any]] = {}
        for block in client.query({
            "titles": "|".join(batch), "redirects": "1", "prop": "pageprops|pageimages",
            "ppprop": "wikibase_item|disambiguation", "piprop": "original|name",
            "pilicense": lead_images, "pilimit": "max",
        }):
            normalized.update({n["from"]: n["to"] for n in block.get("normalized", [])})
            redirects.update({r["from"]: r["to"] for r in block.get("redirects", [])})
            for page in block.get("pages", []):
                merged = pages.setdefault(page.get("title", ""), {})
                merged.update(page)
        for title in batch:
            out[title] = _resolve_one(title, normalized, redirects, pages)
    return out


def _resolve_one(title: str, normalized: dict[str, str], redirects: dict[str, str],
                 pages: dict[str, dict[str, Any]]) -> Resolved:
    cur = normalized.get(title, title)
    seen = {cur}
    while cur in redirects:
        cur = redirects[cur]
        if cur in seen:
            return Resolved(title, "redirect_loop", reason=f"redirects loop back to {cur!r}")
        seen.add(cur)
    page = pages.get(cur)
    if page is None:
        return Resolved(title, "missing", reason="the API returned no page for it")
    if page.get("invalid"):
        return Resolved(title, "invalid", reason=str(page.get("invalidreason", "invalid title")))
    if page.get("missing"):
        return Resolved(title, "missing", title=cur, reason="no such page")
    props = page.get("pageprops", {})
    if "disambiguation" in props:
        return Resolved(title, "disambiguation", title=cur, pageid=page.get("pageid"),
                        reason="a disambiguation page, not a person")
    original = page.get("original") or {}
    size = (int(original["width"]), int(original["height"])) if "width" in original else None
    return Resolved(title, "ok", title=cur, pageid=page.get("pageid"), qid=props.get("wikibase_item"),
                    lead_image=page.get("pageimage"), lead_image_size=size)


# -- Wikidata -----------------------------------------------------------------------------------------
@dataclass
class WikidataFacts:
    human: bool | None
    birth_year: int | None


def wikidata_facts(client: PoliteClient, qids: Sequence[str]) -> dict[str, WikidataFacts]:
    """Instance-of-human (P31 = Q5) and birth year (P569) per QID, `batch_size` ids a request."""
    out: dict[str, WikidataFacts] = {}
    size = batch_size(client)
    for batch in batched(sorted(set(qids)), size):
        data = client.api({"action": "wbgetentities", "ids": "|".join(batch), "props": "claims"},
                          url=client.config.wikidata_api_url)
        for qid, entity in data.get("entities", {}).items():
            if "missing" in entity:
                out[qid] = WikidataFacts(None, None)
                continue
            claims = entity.get("claims", {})
            kinds = {_value(c).get("id") for c in _claims(claims, "P31") if isinstance(_value(c), dict)}
            out[qid] = WikidataFacts("Q5" in kinds if kinds else None, _birth_year(claims))
    return out


def _claims(claims: dict[str, Any], prop: str) -> list[dict[str, Any]]:
    statements = [c for c in claims.get(prop, []) if c.get("rank") != "deprecated"]
    preferred = [c for c in statements if c.get("rank") == "preferred"]
    return preferred or statements


def _value(claim: dict[str, Any]) -> Any:
    snak = claim.get("mainsnak", {})
    return snak.get("datavalue", {}).get("value") if snak.get("snaktype") == "value" else None


def _birth_year(claims: dict[str, Any]) -> int | None:
    for c in _claims(claims, "P569"):
        v = _value(c)
        if isinstance(v, dict) and isinstance(v.get("time"), str):
            m = re.match(r"^([+-])(\d+)-", v["time"])
            if m:
                year = int(m.group(2))
                return -year if m.group(1) == "-" else year
    return None


# -- files ---------------------------------------------------------------------------------------------
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
            normalized: dict[str, str] = {}
            found: dict[str, dict[str, Any]] = {}
            params = {
                "titles": "|".join(titles), "prop": "imageinfo", "iiprop": "url|size|sha1|mime|extmetadata",
                "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|Credit|AttributionRequired|NonFree"
                                       "|UsageTerms|Copyrighted|ObjectName",
            }
            if width is not None:
                params["iiurlwidth"] = str(width)
            for block in client.query(params, url=url):
                normalized.update({n["from"]: n["to"] for n in block.get("normalized", [])})
                for page in block.get("pages", []):
                    if page.get("imageinfo"):
                        found[page["title"]] = page["imageinfo"][0]
            for t, name in titles.items():
                info = found.get(normalized.get(t, t))
                if info is None:
                    missing.append(name)
                else:
                    out[name] = info
        pending = missing
    return out
