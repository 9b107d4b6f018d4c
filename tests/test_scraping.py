"""Scraping against the offline stand-in: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scraping.config import HttpConfig, ImagesConfig, NamesConfig
from scraping.http import PoliteClient
from scraping.images import fetch_images
from scraping.mediawiki import parse_list_html
from scraping.names import collect_names
from scraping.store import ImageStore
from wikifaces.cli import app
from wikifaces.core.tables import read_jsonl
from wikifaces.fixtures.standin import TOKEN, StandinServer, build_corpus
from wikifaces.fixtures.standin.corpus import HOSTILE_ARTIST

from .conftest import CONTACT, REPO
from .conftest import standin_http as http


def lead_images(**kw: object) -> ImagesConfig:
    """These tests are about fetching one file per person, the lead image (multi-route candidates:
    tests/test_identity.py)."""
    return ImagesConfig(max_images_per_person=1, **kw)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(60, seed=0)


def names_rows(root: Path) -> list[dict]:
    return list(read_jsonl(root / "raw" / "wikipedia" / "names.jsonl"))


def image_rows(root: Path) -> list[dict]:
    return list(read_jsonl(root / "raw" / "wikipedia" / "images.jsonl"))


@pytest.fixture
def named_root(tmp_path, server):
    """A data root whose names stage has run on the whole stand-in."""
    collect_names(NamesConfig(categories=("Stand-in everyone",), http=http(server)), tmp_path)
    server.clear_log()
    return tmp_path


# -- names ---------------------------------------------------------------------------------------
def test_category_recursion_with_cycle_and_empty_category(tmp_path, server, corpus):
    s = collect_names(NamesConfig(categories=("Stand-in people",), category_depth=3, http=http(server)), tmp_path)
    rows = names_rows(tmp_path)
    assert s.people == len(rows) == len(corpus.people)
    assert sorted(r["title"] for r in rows) == sorted(p.title for p in corpus.people)
    assert len({r["person_id"] for r in rows}) == len(rows)
    by_title = {p.title: p for p in corpus.people}
    for r in rows:
        assert r["person_id"] == by_title[r["title"]].qid and r["pageid"] == by_title[r["title"]].pageid
        assert r["lang"] == "en" and r["source"].startswith("category:Stand-in ")
    # every category was listed once, although scientists and artists contain each other
    listed = [e.params["cmtitle"] for e in server.log if e.params.get("list") == "categorymembers"]
    assert sorted(listed) == sorted(["Category:Stand-in people", "Category:Stand-in scientists",
                                     "Category:Stand-in artists", "Category:Stand-in empty"])


def test_category_depth_zero_takes_only_its_own_pages(tmp_path, server, corpus):
    collect_names(NamesConfig(categories=("Category:Stand-in_people",), http=http(server)), tmp_path)
    assert [r["title"] for r in names_rows(tmp_path)] == [p.title for p in corpus.people[:4]]


def test_a_large_category_is_merged_in_the_work_file_not_in_memory(tmp_path, monkeypatch):
    """The Wikipedia route keeps its titles and pages in a work file (`names.work.sqlite`) and
    holds one batch at a time: 4,000 people in batches of 250 peak far below their rows' size
    (~1.8 kB a person held as rows: ~7 MB here). A killed run's work file is started afresh."""
    import tracemalloc

    import scraping.names

    monkeypatch.setattr(scraping.names, "TITLE_BATCH", 250)
    corpus = build_corpus(4000)
    work = tmp_path / "raw" / "wikipedia" / "names.work.sqlite"
    work.parent.mkdir(parents=True)
    work.write_bytes(b"left by a killed run" * 100)
    with StandinServer(corpus, port=0) as server:
        tracemalloc.start()
        s = collect_names(NamesConfig(categories=("Stand-in people",), category_depth=2, born_after=1800,
                                      http=http(server)), tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    rows = names_rows(tmp_path)
    rejected = list(read_jsonl(tmp_path / "raw" / "wikipedia" / "names-rejected.jsonl"))
    assert len(rows) == s.people and len(rows) + len(rejected) == len(corpus.people) == 4000
    assert {r["status"] for r in rejected} == {"born_before"} and all(r["birth_year"] >= 1800 for r in rows)
    assert len({r["person_id"] for r in rows}) == len(rows)
    assert peak < (2 << 20) + 4000 * 500, peak
    assert not work.exists()


def test_list_page_parser_keeps_only_body_links(corpus):
    titles = parse_list_html(corpus.list_pages["List of stand-in people"])
    people = [p.title for p in corpus.people[:20]]
    alias = next(k for k, v in corpus.redirects.items() if v == people[0])
    assert set(titles) == {*people, alias, "Computer science", "John Smith", "United States"}
    for excluded in ("Turing Award", "Ada Nobody", "Caption Person", "Red Linked Person", "See Also Person",
                     "Reference Person", "Navbox Person", "Example.jpg", "Wikipedia:Notability"):
        assert not any(excluded in t for t in titles), excluded


def test_list_page_parser_handles_older_markup():
    html = """<div class="mw-parser-output"><p><a href="/wiki/Alan_Turing">Alan Turing</a>,
    <a href="/wiki/Grace_Hopper#Career">Hopper</a>, <a href="/wiki/File:X.jpg">file</a>,
    <a href="/wiki/Help:Contents">help</a>, <a href="./Ada_Lovelace">Parsoid link</a></p>
    <h2><span class="mw-headline" id="See_also">See also</span></h2>
    <ul><li><a href="/wiki/Not_Me">Not me</a></li></ul></div>"""
    assert parse_list_html(html) == ["Alan Turing", "Grace Hopper", "Ada Lovelace"]


def test_list_page_source_filters_non_people(tmp_path, server, corpus):
    s = collect_names(NamesConfig(list_pages=("List of stand-in people",), http=http(server)), tmp_path)
    rows = names_rows(tmp_path)
    assert sorted(r["title"] for r in rows) == sorted(p.title for p in corpus.people[:20])
    rejected = {r["input"]: r["status"] for r in read_jsonl(tmp_path / "raw/wikipedia/names-rejected.jsonl")}
    assert rejected == {"John Smith": "disambiguation", "Computer science": "not_human",
                        "United States": "not_human"}
    assert s.rejected == {"disambiguation": 1, "not_human": 2}
    # the person reached through a redirect and directly is one row with both routes
    queried = "|".join(e.params.get("titles", "") for e in server.log)
    assert "Red Linked Person" not in queried and "Navbox Person" not in queried


def test_names_file_resolution(tmp_path, server, corpus):
    p0, p1, p2 = corpus.people[0], corpus.people[1], corpus.people[2]
    alias = next(k for k, v in corpus.redirects.items() if v == p0.title)
    lines = ["# comment", p0.title, alias, p1.title[0].lower() + p1.title[1:].replace(" ", "_"), "",
             f"{p1.title} (scientist)",
             "Nobody At All", "Loop Alpha", "John Smith", "bad|title", p2.title]
    (tmp_path / "names.txt").write_text("\n".join(lines) + "\n")
    collect_names(NamesConfig(names_file=tmp_path / "names.txt", http=http(server)), tmp_path)
    rows = names_rows(tmp_path)
    assert [r["title"] for r in rows] == [p0.title, p1.title, p2.title]
    assert rows[0]["source"] == "file:names.txt" and rows[0]["lead_image"] == p0.image
    rejected = {r["input"]: r["status"] for r in read_jsonl(tmp_path / "raw/wikipedia/names-rejected.jsonl")}
    assert rejected == {"Nobody At All": "missing", "Loop Alpha": "redirect_loop", "John Smith": "disambiguation",
                        "Bad|title": "invalid"}


def test_born_after_uses_wikidata(tmp_path, server, corpus):
    collect_names(NamesConfig(categories=("Stand-in everyone",), born_after=1900, http=http(server)), tmp_path)
    rows = names_rows(tmp_path)
    want = [p for p in corpus.people if p.birth_year is not None and p.birth_year >= 1900]
    assert sorted(r["title"] for r in rows) == sorted(p.title for p in want)
    assert all(r["birth_year"] >= 1900 for r in rows)
    rejected = list(read_jsonl(tmp_path / "raw/wikipedia/names-rejected.jsonl"))
    assert len(rejected) == len(corpus.people) - len(want)
    assert {r["status"] for r in rejected} == {"born_before"}
    assert any(e.endpoint == "wikidata" for e in server.log)


def test_batches_of_50_and_500_with_a_token(tmp_path, server, corpus, monkeypatch):
    big = build_corpus(130, seed=1)
    with StandinServer(big) as s:
        collect_names(NamesConfig(categories=("Stand-in everyone",), http=http(s)), tmp_path / "a")
        batches = [len(e.params["titles"].split("|")) for e in s.log if "titles" in e.params]
        assert batches == [50, 50, 30]
        s.clear_log()
        monkeypatch.setenv("WIKIFACES_API_TOKEN", TOKEN)
        collect_names(NamesConfig(categories=("Stand-in everyone",), http=http(s)), tmp_path / "b")
        batches = [len(e.params["titles"].split("|")) for e in s.log if "titles" in e.params]
        assert batches[0] == 130  # one request; pageimages continues in steps of 100
        assert names_rows(tmp_path / "a") == names_rows(tmp_path / "b")


def test_contact_is_required_for_the_real_sites(tmp_path):
    with pytest.raises(ValueError, match="contact is required"):
        PoliteClient(HttpConfig())
    r = CliRunner().invoke(app, ["names", "--category", "Physicists", "--root", str(tmp_path)])
    assert r.exit_code == 1 and "contact is required" in r.output


def test_user_agent_and_serial_rate_limited_api(tmp_path, server):
    collect_names(NamesConfig(categories=("Stand-in people",), category_depth=2, born_after=1800,
                              http=http(server, api_requests_per_second=8.0)), tmp_path)
    api = [e for e in server.log if e.endpoint in ("api", "commons", "wikidata")]
    assert len(api) >= 5
    assert all(e.user_agent.startswith("wikifaces/") and CONTACT in e.user_agent for e in api)
    assert all(e.params.get("maxlag") == "5" for e in api)
    assert max(e.concurrent for e in api) == 1
    starts = sorted(e.start for e in api)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / 8 - 0.01, gaps


def test_the_api_rate_is_paced_start_to_start(tmp_path, server):
    """5 requests a second means 5 when answers take under 0.2 s: the pause before a request counts
    from the start of the one before, not from its answer (then a 0.15 s answer made it 2.9 a second
    and the real run on paper 1.7 times longer). Still serial, and never faster than asked."""
    server.add_fault("slow", endpoint="api", times=None, delay=0.08)
    collect_names(NamesConfig(categories=("Stand-in people",), category_depth=2,
                              http=http(server, api_requests_per_second=8.0)), tmp_path)
    api = [e for e in server.log if e.endpoint == "api"]
    gaps = sorted(b - a for a, b in itertools.pairwise(sorted(e.start for e in api)))
    assert len(gaps) >= 4 and max(e.concurrent for e in api) == 1
    assert gaps[0] >= 1 / 8 - 0.01, gaps  # never faster than asked
    assert gaps[len(gaps) // 2] < 1 / 8 + 0.05, gaps  # paced from the answer: >= 0.125 + 0.08


def test_api_responses_are_cached_on_disk(tmp_path, server):
    cfg = NamesConfig(categories=("Stand-in people",), category_depth=2, http=http(server, cache=True))
    first = collect_names(cfg, tmp_path)
    n = len(server.log)
    second = collect_names(cfg, tmp_path)
    assert first.api_requests == n > 0
    assert len(server.log) == n and second.api_requests == 0 and second.api_cache_hits == n
    assert names_rows(tmp_path)  # same output from the cache


@pytest.mark.parametrize("kind,retry_after", [("429", 1), ("429", None), ("503", None), ("maxlag", 1), ("500", None)])
def test_api_faults_are_retried(tmp_path, server, corpus, kind, retry_after):
    server.add_fault(kind, endpoint="api", times=2, retry_after=retry_after)
    collect_names(NamesConfig(categories=("Stand-in people",), http=http(server)), tmp_path)
    assert [r["title"] for r in names_rows(tmp_path)] == [p.title for p in corpus.people[:4]]
    hit = [e for e in server.log if e.fault == kind]
    assert len(hit) == 2
    if retry_after:
        after = next(e for e in server.log if e.start > hit[0].start)
        assert after.start - hit[0].end >= retry_after - 0.05  # Retry-After honoured


def test_api_gives_up_with_a_clear_error(tmp_path, server):
    server.add_fault("500", endpoint="api", times=None)
    r = CliRunner().invoke(app, ["names", "--category", "Stand-in people", "--standin", server.url,
                                 "--contact", CONTACT, "--max-attempts", "2", "--root", str(tmp_path)])
    assert r.exit_code == 1 and "HTTP 500" in r.output
    assert not (tmp_path / "raw/wikipedia/names.jsonl").exists()


# -- images ---------------------------------------------------------------------------------------
def test_images_rows_licences_and_store(named_root, server, corpus):
    s = fetch_images(lead_images(http=http(server)), named_root, progress=False)
    rows = image_rows(named_root)
    assert len(rows) == len(corpus.people) == s.people
    assert [r["title"] for r in rows] == [r["title"] for r in names_rows(named_root)]
    by_title = {p.title: p for p in corpus.people}
    store = ImageStore(named_root / "raw/wikipedia/store")
    for r in rows:
        p = by_title[r["title"]]
        if p.image is None or corpus.files[p.image].nonfree:
            assert r["status"] == "no_image", r
            continue
        assert r["status"] == "ok", r
        f = corpus.files[p.image]
        assert r["licence"] == f.licence.split("<", 1)[0] and r["attribution_required"] == f.attribution_required
        assert r["artist"] and "&amp;" not in r["artist"] and "not text" not in r["artist"]
        # markup is gone; only the hostile artist's literal "<script>" text (escaped in the HTML) remains
        assert "<" not in r["artist"] or r["artist"] == HOSTILE_ARTIST
        assert "<" not in r["credit"] and r["nonfree"] is False
        path = store.path(r["sha256"])
        assert path.relative_to(named_root / "raw/wikipedia/store").parts[:2] == (r["sha256"][:2], r["sha256"][2:4])
        assert path.stat().st_size == r["bytes"]
        assert min(r["width"], r["height"]) >= 64
        if f.width > 960:
            assert "/thumb/" in r["url"] and "/960px-" in r["url"] and r["width"] == 960
        else:
            assert "/thumb/" not in r["url"] and r["width"] == f.width
    assert s.statuses["ok"] == sum(1 for r in rows if r["status"] == "ok") > 40
    assert not (named_root / "raw/wikipedia/images.journal.jsonl").exists()


def test_one_bar_counts_every_person_across_the_chunks(named_root, server, monkeypatch):
    """People go through in chunks; the terminal shows one bar for all of them (with the time left)
    and, under it, the chunk's listing and downloading."""
    import io

    import rich
    from rich.console import Console

    out = io.StringIO()
    monkeypatch.setattr(rich, "_console", Console(file=out, force_terminal=True, width=150))
    s = fetch_images(lead_images(limit=12, chunk_people=5, http=http(server)), named_root, progress=True)
    text = out.getvalue()
    assert s.people == 12 and "people done" in text and "listing candidate files" in text
    assert "downloading portraits" in text and all(f"{p}%" in text for p in (42, 83, 100))  # 5, 10, 12 of 12


def test_thumbnail_width_and_original(named_root, server):
    fetch_images(lead_images(thumb_width=250, limit=6, http=http(server)), named_root, progress=False)
    rows = [r for r in image_rows(named_root) if r["status"] == "ok"]
    assert rows and all(r["width"] == 250 and "/250px-" in r["url"] for r in rows)
    shutil.rmtree(named_root / "raw/wikipedia/store")
    (named_root / "raw/wikipedia/images.jsonl").unlink()
    fetch_images(lead_images(thumb_width="original", limit=6, http=http(server)), named_root, progress=False)
    assert all("/thumb/" not in r["url"] for r in image_rows(named_root) if r["status"] == "ok")


def test_nonfree_is_refused_unless_allowed(tmp_path, server, corpus):
    nonfree = next(p for p in corpus.people if p.image and corpus.files[p.image].nonfree)
    (tmp_path / "n.txt").write_text(nonfree.title)
    collect_names(NamesConfig(names_file=tmp_path / "n.txt", lead_images="any", http=http(server)), tmp_path)
    fetch_images(lead_images(http=http(server)), tmp_path, progress=False)
    (row,) = image_rows(tmp_path)
    assert row["status"] == "nonfree" and row["licence"] == "Fair use" and row["sha256"] is None
    assert not any(e.endpoint == "upload" for e in server.log)
    (tmp_path / "raw/wikipedia/images.jsonl").unlink()
    fetch_images(lead_images(allow_nonfree=True, http=http(server)), tmp_path, progress=False)
    assert image_rows(tmp_path)[0]["status"] == "ok"


def _first_with_image(corpus, k=0):
    return [p for p in corpus.people if p.image and not corpus.files[p.image].nonfree][k]


@pytest.mark.parametrize("kind,status", [
    ("html_as_image", "not_image"), ("html", "not_image"), ("svg", "unsupported"), ("gif_anim", "unsupported"),
    ("bomb", "too_large"), ("not_image", "not_image"), ("corrupt_png", "corrupt"), ("404", "http_error"),
])
def test_bad_bodies_become_rows_with_reasons(named_root, server, corpus, kind, status):
    victim = _first_with_image(corpus)
    from urllib.parse import quote

    server.add_fault(kind, endpoint="upload", match=quote(victim.image), times=None)
    fetch_images(lead_images(limit=8, http=http(server)), named_root, progress=False)
    rows = {r["title"]: r for r in image_rows(named_root)}
    assert rows[victim.title]["status"] == status, rows[victim.title]
    assert rows[victim.title]["reason"] and rows[victim.title]["sha256"] is None
    assert sum(r["status"] == "ok" for r in rows.values()) >= 5  # the others are unaffected


def test_cmyk_and_exif_rotated_jpegs_are_kept_the_right_way_up(named_root, server, corpus):
    from urllib.parse import quote

    from wikifaces.core.imaging import open_oriented

    a, b = _first_with_image(corpus, 0), _first_with_image(corpus, 1)
    server.add_fault("cmyk", endpoint="upload", match=quote(a.image), times=None)
    server.add_fault("exif_rotated", endpoint="upload", match=quote(b.image), times=None)
    fetch_images(lead_images(limit=6, http=http(server)), named_root, progress=False)
    rows = {r["title"]: r for r in image_rows(named_root)}
    store = ImageStore(named_root / "raw/wikipedia/store")
    ra, rb = rows[a.title], rows[b.title]
    assert ra["status"] == rb["status"] == "ok"
    assert rb["orientation"] == 6 and (rb["width"], rb["height"]) == (512, 600)  # as displayed: portrait
    upright = open_oriented(store.get(rb["sha256"]))
    assert upright.size == (512, 600) and upright.mode == "RGB"
    assert open_oriented(store.get(ra["sha256"])).mode == "RGB"


def test_oversized_body_is_cut_off(named_root, server, corpus):
    victim = _first_with_image(corpus)
    from urllib.parse import quote

    server.add_fault("oversized", endpoint="upload", match=quote(victim.image), times=None)
    fetch_images(lead_images(limit=4, http=http(server, max_response_bytes=5_000_000)), named_root, progress=False)
    row = {r["title"]: r for r in image_rows(named_root)}[victim.title]
    assert row["status"] == "too_large" and "cap" in row["reason"]


@pytest.mark.parametrize("kind", ["429", "503", "truncated", "500"])
def test_transient_download_faults_are_retried(named_root, server, corpus, kind):
    victim = _first_with_image(corpus)
    from urllib.parse import quote

    server.add_fault(kind, endpoint="upload", match=quote(victim.image), times=2,
                     retry_after=1 if kind == "429" else None)
    fetch_images(lead_images(limit=4, http=http(server)), named_root, progress=False)
    row = {r["title"]: r for r in image_rows(named_root)}[victim.title]
    assert row["status"] == "ok", row
    assert sum(1 for e in server.log if e.fault == kind) == 2


def test_slow_body_hits_the_deadline(named_root, server, corpus):
    victim = _first_with_image(corpus)
    from urllib.parse import quote

    server.add_fault("slow_body", endpoint="upload", match=quote(victim.image), times=None, delay=3.0)
    fetch_images(lead_images(limit=3, http=http(server, download_deadline=0.5, max_attempts=2)), named_root,
                 progress=False)
    row = {r["title"]: r for r in image_rows(named_root)}[victim.title]
    assert row["status"] == "http_error" and "not complete within" in row["reason"]


def test_redirects_must_stay_on_allowed_hosts(named_root, server, corpus):
    from urllib.parse import quote

    a, b = _first_with_image(corpus, 0), _first_with_image(corpus, 1)
    server.add_fault("redirect", endpoint="upload", match=quote(a.image), times=None,
                     location="http://evil.invalid/steal.jpg")
    target = f"{server.url}/upload/wikipedia/commons/0/00/{quote(b.image)}"
    server.add_fault("redirect", endpoint="upload", match=quote(b.image), times=1, location=target)
    fetch_images(lead_images(limit=6, http=http(server)), named_root, progress=False)
    rows = {r["title"]: r for r in image_rows(named_root)}
    assert rows[a.title]["status"] == "disallowed_host" and "evil.invalid" in rows[a.title]["reason"]
    assert rows[b.title]["status"] == "ok"  # redirected within the allowed host


def test_connection_refused_is_an_http_error(named_root, server):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    cfg = http(server, max_attempts=2)
    cfg = cfg.model_copy(update={"allowed_download_hosts": (server.host, dead)})
    server.add_fault("redirect", endpoint="upload", times=None, location=f"http://{dead}/x.jpg")
    fetch_images(lead_images(limit=3, http=cfg), named_root, progress=False)
    rows = [r for r in image_rows(named_root) if r["file"]]
    assert rows and all(r["status"] == "http_error" and "refused" in r["reason"].lower() for r in rows)


def test_download_concurrency_and_bandwidth_caps(named_root, server):
    server.add_fault("slow", endpoint="upload", times=None, delay=0.2)
    t0 = time.monotonic()
    s = fetch_images(lead_images(limit=16, thumb_width=500,
                                  http=http(server, max_concurrent_downloads=2, download_bytes_per_second=300_000)),
                     named_root, progress=False)
    elapsed = time.monotonic() - t0
    uploads = [e for e in server.log if e.endpoint == "upload"]
    assert len(uploads) == s.statuses["ok"] > 8
    assert max(e.concurrent for e in uploads) == 2  # two at a time, never more
    total = sum(r["bytes"] for r in image_rows(named_root) if r["bytes"])
    assert elapsed >= (total - 300_000) / 300_000 * 0.9, (total, elapsed)


def test_takedowns_apply_to_every_run(named_root, server, corpus):
    fetch_images(lead_images(http=http(server)), named_root, progress=False)
    ok = [r for r in image_rows(named_root) if r["status"] == "ok"]
    by_file, by_qid, by_sha = ok[0], ok[1], ok[2]
    store = ImageStore(named_root / "raw/wikipedia/store")
    assert store.has(by_sha["sha256"])
    (named_root / "takedown.txt").write_text(
        f"# takedown requests\nFile:{by_file['file'].replace('_', ' ')}\n{by_qid['person_id']}\n{by_sha['sha256']}\n")
    server.clear_log()
    fetch_images(lead_images(takedown_file=named_root / "takedown.txt", http=http(server)), named_root, progress=False)
    rows = {r["person_id"]: r for r in image_rows(named_root)}
    for r in (by_file, by_qid, by_sha):
        assert rows[r["person_id"]]["status"] == "taken_down" and "takedown" in rows[r["person_id"]]["reason"]
        if not any(x["sha256"] == r["sha256"] and x["status"] == "ok" for x in rows.values()):
            assert not store.has(r["sha256"])
    assert not any(e.endpoint == "upload" for e in server.log)  # nothing was downloaded again


def test_rerun_skips_done_people_and_retry_failed(named_root, server, corpus):
    from urllib.parse import quote

    victim = _first_with_image(corpus)
    server.add_fault("500", endpoint="upload", match=quote(victim.image), times=None)
    cfg = lead_images(limit=10, http=http(server, max_attempts=2))
    fetch_images(cfg, named_root, progress=False)
    first = image_rows(named_root)
    assert {r["title"]: r for r in first}[victim.title]["status"] == "http_error"
    server.clear_faults()
    server.clear_log()
    fetch_images(cfg, named_root, progress=False)
    assert image_rows(named_root) == first and not server.log  # nothing redone
    fetch_images(cfg.model_copy(update={"retry_failed": True}), named_root, progress=False)
    rows = image_rows(named_root)
    assert {r["title"]: r for r in rows}[victim.title]["status"] == "ok"
    assert [e.endpoint for e in server.log if e.endpoint == "upload"] == ["upload"]  # only the failure
    assert len(rows) == len(first) and len({r["person_id"] for r in rows}) == len(rows)


def test_people_in_chunks_give_the_rows_of_one_pass(tmp_path, named_root, server):
    """Listing and fetching go chunk by chunk (so a million people's listings are never held at
    once); the table is the same as one pass's, person by person, and so are the requests made."""
    whole = tmp_path / "whole"
    shutil.copytree(named_root, whole)
    fetch_images(ImagesConfig(http=http(server)), whole, progress=False)
    one_pass = len([e for e in server.log if e.endpoint == "upload"])
    server.clear_log()
    s = fetch_images(ImagesConfig(chunk_people=7, http=http(server)), named_root, progress=False)
    rows = image_rows(named_root)
    assert rows == image_rows(whole) and s.counts["fetched_now"] == len(rows) > 2 * 7
    assert len([e for e in server.log if e.endpoint == "upload"]) == one_pass  # each file downloaded once
    # the chunk says how to run, not what comes out: another chunk size resumes the same table
    again = fetch_images(ImagesConfig(chunk_people=3, http=http(server)), whole, progress=False)
    assert again.counts["fetched_now"] == 0 and image_rows(whole) == rows


def test_the_next_chunk_is_listed_while_one_downloads(tmp_path, named_root, server, monkeypatch):
    """API calls and downloads have limits of their own: the next chunk's listing (serial API calls)
    runs while a chunk downloads, so a run takes the longer of the two, not their sum. The rows are
    one pass's; no two API calls are ever in flight at once."""
    whole = tmp_path / "whole"
    shutil.copytree(named_root, whole)
    fetch_images(ImagesConfig(http=http(server)), whole, progress=False)
    downloads: list[tuple[float, float]] = []  # as the client sees them: a paced body is read slowly
    real_download = PoliteClient.download

    def download(self, url):
        t0 = time.monotonic()
        try:
            return real_download(self, url)
        finally:
            downloads.append((t0, time.monotonic()))

    monkeypatch.setattr(PoliteClient, "download", download)
    server.clear_log()
    paced = http(server, api_requests_per_second=20.0, download_bytes_per_second=2_000_000)
    fetch_images(ImagesConfig(chunk_people=7, http=paced), named_root, progress=False)
    assert image_rows(named_root) == image_rows(whole)
    api = sorted((e for e in server.log if e.endpoint in ("api", "commons", "wikidata")), key=lambda e: e.start)
    during = [a for a in api if any(d0 < a.start < d1 for d0, d1 in downloads)]
    assert len(during) > 5, (len(during), len(api))  # listings made while files came down
    assert all(b.start >= a.end for a, b in itertools.pairwise(api))  # API calls one at a time


def test_a_rerun_streams_the_table_chunk_by_chunk(tmp_path):
    """A million people's image rows are gigabytes as dicts: a run holds one chunk's rows (earlier
    results are read back through an offset index) and writes the table as chunks end. Here a
    finished table of 20,000 people is rerun (nothing to fetch) in chunks of 1,000; it is rewritten
    unchanged while the run's Python heap peaks far below what the rows take."""
    import tracemalloc

    from scraping.images import IMAGES_FILE, KEY_FILE, _base_row, item_hash
    from scraping.names import NAMES_FILE
    from wikifaces.core.paths import DataRoot
    from wikifaces.core.tables import write_jsonl

    data = DataRoot.resolve(tmp_path)
    out = data.raw_wikipedia
    people = [{"person_id": f"Q{i}", "title": f"Person {i}", "pageid": i} for i in range(20_000)]
    write_jsonl(out / NAMES_FILE, people)
    rows = [{**_base_row(p), "status": "no_image", "reason": "nothing on Commons " + "." * 500} for p in people]
    write_jsonl(out / IMAGES_FILE, rows)
    config = ImagesConfig(chunk_people=1000, http=HttpConfig(contact=CONTACT))
    (out / KEY_FILE).write_text(item_hash(config, data))
    tracemalloc.start()
    rows_cost = tracemalloc.get_traced_memory()[0]
    copy = [dict(r) for r in read_jsonl(out / IMAGES_FILE)]
    rows_cost = tracemalloc.get_traced_memory()[0] - rows_cost
    del copy
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    s = fetch_images(config, tmp_path, progress=False)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert list(read_jsonl(out / IMAGES_FILE)) == rows
    assert s.people == 20_000 and s.counts["files"] == 20_000 and s.counts["fetched_now"] == 0
    assert s.statuses == {"no_image": 20_000} and s.api_requests == 0
    assert peak < rows_cost / 5, (peak, rows_cost)


_RUN_IMAGES = textwrap.dedent("""
    import sys
    from scraping.config import HttpConfig, ImagesConfig
    from scraping.images import fetch_images
    http = HttpConfig.model_validate_json(sys.argv[2])
    fetch_images(ImagesConfig(http=http), sys.argv[1], progress=False)
""")


def test_sigkill_then_rerun_gives_the_uninterrupted_rows(tmp_path, named_root, server):
    """Killed between listing and downloading every person's candidates (several files each); rerun
    as the CLI and the flows run a stage (the runner), which also removes a temporary the kill left
    in the store (a file being written when it came: more likely on a loaded machine)."""
    from wikifaces.pipeline import run_stage

    clean = tmp_path / "clean"
    shutil.copytree(named_root, clean)
    cfg = http(server)
    fetch_images(ImagesConfig(http=cfg), clean, progress=False)
    server.add_fault("slow", endpoint="upload", times=None, delay=0.15)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _RUN_IMAGES, str(named_root), cfg.model_dump_json()],
                            cwd=REPO, env=env)
    journal = named_root / "raw/wikipedia/images.journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count('"status": "ok"') >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (named_root / "raw/wikipedia/images.jsonl").exists()
    server.clear_faults()
    left = named_root / "raw/wikipedia/store/ab/cd" / f".{'ab' * 32}.k1ll3d00.tmp"  # as a kill mid-write leaves
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"half a picture")
    run_stage("images", ImagesConfig(http=cfg), named_root, progress=False)
    assert not left.exists()
    assert image_rows(named_root) == image_rows(clean)
    stored = sorted(p.name for p in (named_root / "raw/wikipedia/store").rglob("*") if p.is_file())
    assert stored == sorted(p.name for p in (clean / "raw/wikipedia/store").rglob("*") if p.is_file())
    assert not journal.exists()


def test_cli_names_and_images_on_the_standin(tmp_path, server, corpus):
    runner = CliRunner()
    r = runner.invoke(app, ["names", "-c", "Stand-in people", "--depth", "2", "--standin", server.url,
                            "--contact", CONTACT, "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"{len(corpus.people)} people" in r.output
    r = runner.invoke(app, ["images", "--standin", server.url, "--contact", CONTACT, "--limit", "5",
                            "--max-images-per-person", "1", "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "ok" in r.output and len(image_rows(tmp_path)) == 5
    r = runner.invoke(app, ["images", "--thumb-width", "777", "--standin", server.url, "--root", str(tmp_path)])
    assert r.exit_code == 2 and "thumb_width" in r.output
    receipt = json.loads((tmp_path / "receipts/images.json").read_text())
    assert receipt["stage"] == "images" and receipt["counts"]["people"] == 5
