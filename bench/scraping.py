"""API requests per 1000 names and the download rate, against the offline stand-in.

Side by side in one run:
  * wikifaces: names (one flat category) + images + licences, as the stages do it: 50 titles
    a request, lead images asked in the same request as the page resolution;
  * the same with a token that grants `apihighlimits` (500 a request where the API allows);
  * the anchor: one call per name and per kind (page, lead image, file metadata), as a
    straightforward scraper would do it.
Requests are counted from the stand-in's own request log.

Multi-image candidates (`max_images_per_person` 20: lead image, Wikidata image P18, Commons category,
P180 depicts): `requests per 1000 people (multi-image)`. The floor is about 2 requests a person: a
Commons category is listed with `generator=categorymembers` and a depicts search is made with
`generator=search`, each bringing `prop=imageinfo` (licence, author, size, MIME, URL) in the same
request; neither can be batched across people (`gcmtitle` takes one category; a search for several
QIDs at once would not say which file depicts whom without a further structured-data request per
file). Everything else is batched: Wikidata's P18 and P373 for people found on Wikipedia (one
`wbgetentities` per 50) and imageinfo for the lead and P18 files (50 titles a request), ~0.04 a person.
So 2.04 a person with a category, 1.04 without; target <= 2,100 per 1000 people. The stand-in gives
a Commons category to a third of its people, so the run also prints the projection for a population
in which everyone has one (measured per-route costs, not a guess).

And the Wikidata Query Service's cost of `names --source wikidata-sparql` on the stand-in's timing
model (wikifaces.fixtures.standin.sparql.SparqlModel: 0.4 s a query plus 0.2 ms a result row, a
query stopped at 60 s), scaled to 100,000 people: the slice target is scaled with the population
(--people/5 rows, as 20,000 is for 100,000), so the run has the slices a 100,000-people run has,
and the row cost is scaled by 100,000/people. The floor: WDQS must produce every result row (one
per person, more for people with several images or categories: 0.2 ms each, 20 s per 100,000) plus
one base cost per slice (>= 5 slices of 20,000); time-outs add 60 s each, and WDQS grants 60 s of
query time a minute, so beyond 50 s (our pace) the wall time is the query time x 60/50.

And the images stage at Wikimedia's pace (API 5 requests/s, 24 Mbit/s) over a small world in
chunks: the next chunk is listed while one downloads, so it takes about the longer of the API's
and the downloads' times, where taking turns took their sum.

    .venv/bin/python bench/scraping.py [--people 1000] [--paced-people 150]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the package it measures: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from scraping.config import HttpConfig, ImagesConfig, NamesConfig  # noqa: E402
from scraping.http import PoliteClient  # noqa: E402
from scraping.images import fetch_images  # noqa: E402
from scraping.names import collect_names  # noqa: E402
from wikifaces.fixtures.standin import TOKEN, StandinServer, build_corpus  # noqa: E402

CONTACT = "bench@wikifaces.invalid"


def api_requests(server: StandinServer) -> int:
    return sum(1 for e in server.log if e.endpoint in ("api", "commons", "wikidata"))


def ours(server: StandinServer, root: Path, images: bool = True, per_person: int = 1) -> tuple[int, float, dict]:
    http = HttpConfig(**server.endpoints(), contact=CONTACT, api_requests_per_second=50)
    server.clear_log()
    collect_names(NamesConfig(categories=("Stand-in everyone",), http=http), root)
    t0 = time.monotonic()
    # the multi-image run takes 250 px thumbnails: requests do not depend on the width, the bytes do
    config = ImagesConfig(http=http, max_images_per_person=per_person, thumb_width=960 if per_person == 1 else 250)
    summary = fetch_images(config, root, progress=False) if images else None
    elapsed = time.monotonic() - t0
    return api_requests(server), elapsed, (summary.counts if summary else {})


def naive(server: StandinServer) -> int:
    """One request per name and kind: the anchor."""
    http = HttpConfig(**server.endpoints(), contact=CONTACT, api_requests_per_second=50, cache=False)
    client = PoliteClient(http)
    server.clear_log()
    titles = [m["title"] for b in client.query({"list": "categorymembers", "cmtitle": "Category:Stand-in everyone",
                                                "cmlimit": "500"}) for m in b["categorymembers"]]
    for t in titles:
        client.query({"titles": t, "redirects": "1", "prop": "pageprops"})
        (page,) = client.query({"titles": t, "prop": "pageimages", "piprop": "original|name"})[0]["pages"]
        if "pageimage" in page:
            client.query({"titles": f"File:{page['pageimage']}", "prop": "imageinfo",
                          "iiprop": "url|size|sha1|mime|extmetadata", "iiurlwidth": "960"},
                         url=http.commons_api_url)
    return api_requests(server)


def sparql_cost(people: int) -> tuple[float, float, dict]:
    """(modelled WDQS seconds per 100,000 people, paced wall seconds per 100,000, counts)."""
    corpus = build_corpus(people)
    with StandinServer(corpus) as server, tempfile.TemporaryDirectory() as d:
        http = HttpConfig(**server.endpoints(), contact=CONTACT, api_requests_per_second=50,
                          sparql_slice_rows=max(1, people // 5))
        summary = collect_names(NamesConfig(source="wikidata-sparql", resolve_pages=False, http=http), Path(d),
                                progress=False)
        model = server.sparql
        queries = int(summary.counts["sparql"]["queries"])
        rows = summary.counts["sparql"].get("rows", 0)
        timeouts = summary.counts["halvings"]
    scale = 100_000 / len(corpus.humans)
    seconds = queries * model.base_seconds + rows * model.seconds_per_row * scale + timeouts * model.limit_seconds
    budget = HttpConfig().sparql_seconds_per_minute
    paced = seconds if seconds <= budget else seconds * 60 / budget
    return seconds, paced, {"queries": queries, "rows": rows, "timeouts": timeouts, "humans": len(corpus.humans)}


def paced_images(people: int, chunk: int) -> tuple[float, float, float]:
    """The images stage at Wikimedia's pace (API 5 requests/s, downloads 24 Mbit/s, our defaults) in
    chunks of `chunk` people: its wall time, and the API's and the downloads' own times at that
    pace (the run took their sum while a chunk was listed and then downloaded in turn)."""
    corpus = build_corpus(people)
    with StandinServer(corpus) as server, tempfile.TemporaryDirectory() as d:
        http = HttpConfig(**server.endpoints(), contact=CONTACT)
        collect_names(NamesConfig(categories=("Stand-in everyone",), http=http), d)
        t0 = time.monotonic()
        c = fetch_images(ImagesConfig(chunk_people=chunk, http=http), d, progress=False).counts
        wall = time.monotonic() - t0
    return wall, c["api_requests"] / http.api_requests_per_second, c["download_bytes"] / http.download_bytes_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--paced-people", type=int, default=150,
                    help="people of the images stage run at Wikimedia's pace, in chunks of a sixth of them")
    args = ap.parse_args()
    n = args.people
    corpus = build_corpus(n)
    with StandinServer(corpus) as server, tempfile.TemporaryDirectory() as d:
        req_ours, dl_seconds, counts = ours(server, Path(d) / "anon")
        os.environ["WIKIFACES_API_TOKEN"] = TOKEN
        req_token, _, _ = ours(server, Path(d) / "token", images=True)
        del os.environ["WIKIFACES_API_TOKEN"]
        req_naive = naive(server)
        req_multi, _, multi_counts = ours(server, Path(d) / "multi", per_person=20)
        by_kind = {"category": sum(e.params.get("generator") == "categorymembers" for e in server.log),
                   "depicts": sum(e.params.get("generator") == "search" for e in server.log)}
        by_kind["batched"] = req_multi - by_kind["category"] - by_kind["depicts"]
    with_category = sum(1 for p in corpus.people if p.commons_category)
    per = 1000 / n
    downloads = counts.get("downloads", 0)
    mb = counts.get("download_bytes", 0) / 1e6
    print(f"people: {n} (stand-in, one category; {downloads} portraits downloaded at the default 960 px)")
    print(f"{'client':<48}{'API requests':>14}{'per 1000 names':>16}")
    for label, r in [("wikifaces (anonymous, 50 a request)", req_ours),
                     ("wikifaces (token with apihighlimits)", req_token),
                     ("one call per name and kind (anchor)", req_naive)]:
        print(f"{label:<48}{r:>14}{r * per:>16.0f}")
    print(f"download: {downloads} images, {mb:.1f} MB in {dl_seconds:.1f} s at 2 concurrent, "
          f"{HttpConfig().download_bytes_per_second / 1e6:.0f} MB/s cap")
    print(f"multi-image (up to 20 a person; {with_category} of {n} people have a Commons category): "
          f"{req_multi} requests ({by_kind['category']} category listings, {by_kind['depicts']} depicts searches, "
          f"{by_kind['batched']} batched look-ups, the names stage's included), "
          f"{multi_counts.get('files', 0)} candidate files")
    projected = 1000 * (by_kind["category"] / max(1, with_category) + by_kind["depicts"] / n) + by_kind["batched"] * per
    print(f"requests per 1000 names: {req_ours * per:.0f}")
    print(f"requests per 1000 people (multi-image): {req_multi * per:.0f}")
    print(f"requests per 1000 people (multi-image, projected with a category for everyone): {projected:.0f}")
    print(f"requests per 1000 names with token: {req_token * per:.0f}")
    print(f"requests per 1000 names naive: {req_naive * per:.0f}")
    print(f"downloads per second: {downloads / dl_seconds:.1f}")
    print(f"download megabytes per second: {mb / dl_seconds:.2f}")
    seconds, paced, c = sparql_cost(n)
    print(f"WDQS (stand-in model): {c['queries']} queries, {c['rows']} rows, {c['timeouts']} timeouts for "
          f"{c['humans']} humans; paced wall time per 100000 people {paced:.0f} s")
    print(f"sparql seconds per 100000 people: {seconds:.0f}")
    chunk = max(1, args.paced_people // 6)
    wall, api_s, dl_s = paced_images(args.paced_people, chunk)
    print(f"images at Wikimedia's pace ({args.paced_people} people in chunks of {chunk}): "
          f"{wall:.1f} s; API calls alone {api_s:.1f} s, downloads alone {dl_s:.1f} s, in turn {api_s + dl_s:.1f} s")
    print(f"paced images seconds: {wall:.1f}")
    print(f"paced images seconds in turn (api + downloads): {api_s + dl_s:.1f}")
    print(f"paced images time over the longer of api and downloads: {wall / max(api_s, dl_s):.2f}")


if __name__ == "__main__":
    main()
