"""Defects found by running against servers and data that are not our own stand-in's defaults:
errors in the response cache, endless continuations, other response shapes, redirect loops the
server resolves one step at a time, hostile file names, metadata that rules a file out, title
spellings, a failing Wikidata, Wikimedia's limits, and transparency. Each against the stand-in
over real HTTP on 127.0.0.1."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import requests_cache
from PIL import Image

from scraping.config import HttpConfig, ImagesConfig, NamesConfig
from scraping.http import HttpError, PoliteClient
from scraping.images import fetch_images
from scraping.names import collect_names
from wikifaces.core.identity import results_hash
from wikifaces.core.imaging import centre_square, composite_alpha, decode_rgb
from wikifaces.core.tables import Journal, read_jsonl, write_jsonl
from wikifaces.fixtures.standin import StandinServer, build_corpus

from .conftest import CONTACT, REPO
from .conftest import standin_http as http

CATEGORY = "Stand-in everyone"


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(30, seed=1)


def rows(root: Path, table: str) -> list[dict]:
    return list(read_jsonl(root / "raw" / "wikipedia" / table))


def api_log(server: StandinServer) -> list:
    return [r for r in server.log if r.endpoint in ("api", "commons", "wikidata")]


# -- 1. an error is never cached ---------------------------------------------------------------------------------
def test_an_error_body_is_never_cached_and_the_retry_reaches_the_server(tmp_path, server):
    """maxlag as HTTP 200 with an `error` body and no MediaWiki-API-Error header: retried against
    the server (not the cache), and a later run is not poisoned."""
    server.add_fault("maxlag_body", endpoint="api", match="categorymembers", times=2)
    config = NamesConfig(categories=(CATEGORY,), http=http(server, cache=True))
    first = collect_names(config, tmp_path)
    assert first.people > 20
    cache = requests_cache.SQLiteCache(str(tmp_path / "raw" / "wikipedia" / "http-cache.sqlite"))
    bodies = [json.loads(r.content) for r in cache.responses.values()]
    assert bodies and not any("error" in b or "errors" in b for b in bodies)
    server.clear_log()
    again = collect_names(config, tmp_path)
    assert again.people == first.people and again.api_requests == 0  # all from the (clean) cache


def test_an_error_an_older_version_cached_is_dropped_and_asked_again(tmp_path, server):
    cache_file = tmp_path / "raw" / "wikipedia" / "http-cache.sqlite"
    cache_file.parent.mkdir(parents=True)
    config = NamesConfig(categories=(CATEGORY,), http=http(server, cache=True))
    # what the old filter stored: the error of a 200 answer without the header
    poisoned = requests_cache.CachedSession(str(cache_file), backend="sqlite", allowable_codes=(200,))
    server.add_fault("maxlag_body", endpoint="api", match="categorymembers", times=1)
    client = PoliteClient(config.http)
    params = {"format": "json", "formatversion": "2", "maxlag": "5", "action": "query", "list": "categorymembers",
              "cmtitle": f"Category:{CATEGORY}", "cmtype": "page", "cmlimit": "max"}
    poisoned.get(config.http.api_url, params=params, headers={"User-Agent": config.http.user_agent()})
    assert "error" in next(iter(poisoned.cache.responses.values())).json()
    poisoned.close()
    client.close()
    summary = collect_names(config, tmp_path)
    assert summary.people > 20


def test_refresh_cache_asks_again_and_overwrites(tmp_path, server):
    config = NamesConfig(categories=(CATEGORY,), http=http(server, cache=True))
    collect_names(config, tmp_path)
    assert collect_names(config, tmp_path).api_requests == 0
    fresh = collect_names(config.model_copy(update={"http": config.http.model_copy(update={"refresh_cache": True})}),
                          tmp_path)
    assert fresh.api_requests > 0 and fresh.api_cache_hits == 0
    assert results_hash(config) == results_hash(config.model_copy(
        update={"http": config.http.model_copy(update={"refresh_cache": True})}))


# -- 2. continuation always ends -----------------------------------------------------------------------------------
def _members(corpus, n: int = 3) -> list[dict]:
    return [{"pageid": p.pageid, "ns": 0, "title": p.title} for p in corpus.people[:n]]


@pytest.mark.timeout(60)
def test_a_repeated_continuation_token_stops_with_a_warning(tmp_path, server, corpus):
    body = {"query": {"categorymembers": _members(corpus)},
            "continue": {"cmcontinue": "page|same|1", "continue": "-||"}}
    server.add_fault("json", endpoint="api", match="categorymembers", times=None, body=body)
    summary = collect_names(NamesConfig(categories=(CATEGORY,), http=http(server, cache=True)), tmp_path)
    assert summary.people == 3  # the rows obtained are kept
    warnings = summary.counts["warnings"]
    assert len(warnings) == 1 and "repeated the continuation" in warnings[0]
    assert f"cmtitle=Category:{CATEGORY}" in warnings[0]
    assert sum("categorymembers" in str(r.params) for r in api_log(server)) == 2


@pytest.mark.timeout(60)
def test_an_endless_continuation_stops_at_the_page_cap(tmp_path, server, corpus):
    counter = itertools.count()
    members = _members(corpus, 5)

    def endless(params: dict) -> dict:
        k = next(counter)
        return {"query": {"categorymembers": [members[k % 5]]}, "continue": {"cmcontinue": f"page|{k}|{k}",
                                                                              "continue": "-||"}}

    server.add_fault("json", endpoint="api", match="categorymembers", times=None, body=endless)
    summary = collect_names(NamesConfig(categories=(CATEGORY,), http=http(server, max_continuations=25)), tmp_path)
    assert summary.people == 5
    assert "passed 25 pages of continuation" in summary.counts["warnings"][0]
    assert sum("categorymembers" in str(r.params) for r in api_log(server)) == 25


def test_older_file_revisions_are_never_followed(server, corpus):
    name = next(iter(corpus.files))
    body = {"query": {"pages": [{"title": f"File:{name}", "imageinfo": [{"url": "x"}]}]},
            "continue": {"iistart": "2019-01-01T00:00:00Z", "continue": "||"}}
    server.add_fault("json", endpoint="commons", times=None, body=body)
    client = PoliteClient(http(server))
    blocks = client.query({"titles": f"File:{name}", "prop": "imageinfo"}, url=client.config.commons_api_url)
    client.close()
    # counted by the client: the stand-in logs a request only after its answer has gone out
    assert len(blocks) == 1 and client.stats["api_requests"] == 1 and not client.warnings


# -- 3. other response shapes: rows or one clean error -------------------------------------------------------------
def test_formatversion_1_answers_give_the_same_rows(tmp_path, server):
    config = NamesConfig(categories=(CATEGORY,), list_pages=("List of stand-in people",), born_after=1800,
                         http=http(server))
    collect_names(config, tmp_path / "v2")
    fetch_images(ImagesConfig(http=config.http), tmp_path / "v2", progress=False)
    server.add_fault("formatversion1", times=None)
    collect_names(config, tmp_path / "v1")
    fetch_images(ImagesConfig(http=config.http), tmp_path / "v1", progress=False)
    assert len(rows(tmp_path / "v1", "names.jsonl")) > 10
    for table in ("names.jsonl", "names-rejected.jsonl", "images.jsonl"):
        assert rows(tmp_path / "v1", table) == rows(tmp_path / "v2", table), table


MALFORMED = [  # (request it answers, body)
    ("categorymembers", {"query": {"categorymembers": "not a list"}}),
    ("categorymembers", {"query": {"categorymembers": [{"ns": 0}, {"title": 7, "ns": 0}, "x"]}}),
    ("categorymembers", {"query": []}),
    ("categorymembers", [1, 2, 3]),
    ("action=parse", {"parse": {"title": "List of stand-in people", "text": {"*": None}}}),
    ("action=parse", {"parse": "gone"}),
    ("pageprops", {"query": {"pages": [{"title": "A", "pageid": "not a number"}, {"pageid": 5}, None]}}),
    ("pageprops", {"query": {"pages": {"5": {"title": "A", "missing": ""}}, "normalized": "x", "redirects": [5]}}),
    ("pageprops", {"batchcomplete": ""}),
    ("wbgetentities", {"entities": ["Q1"]}),
    ("wbgetentities", {"entities": {"Q1": {"claims": {"P31": "Q5"}}, "Q2": None}}),
    ("prop=imageinfo", {"query": {"pages": [{"title": "File:X.jpg", "imageinfo": {"url": 5}}]}}),
    ("prop=imageinfo", {"query": {"pages": [{"title": "File:X.jpg",
                                             "imageinfo": [{"url": None, "width": "wide"}]}]}}),
]


@pytest.mark.parametrize("match,body", MALFORMED, ids=[f"{m}-{i}" for i, (m, _) in enumerate(MALFORMED)])
def test_malformed_answers_give_rows_or_one_clean_error(tmp_path, server, match, body):
    server.add_fault("json", match=match, times=None, body=body)
    config = NamesConfig(categories=(CATEGORY,), list_pages=("List of stand-in people",), born_after=1800,
                         http=http(server, max_attempts=2))
    try:
        collect_names(config, tmp_path)
        fetch_images(ImagesConfig(http=config.http), tmp_path, progress=False)
    except HttpError as exc:  # the one clean way to fail: a message that names the request
        assert str(exc) and "Traceback" not in str(exc)
        return
    for row in rows(tmp_path, "images.jsonl"):
        assert row["status"] and (row["status"] == "ok" or row["reason"])


def test_cli_reports_a_malformed_answer_in_one_line(tmp_path, server):
    server.add_fault("json", match="action=parse", times=None, body={"parse": {"text": 5}})
    r = subprocess.run([sys.executable, "-m", "wikifaces.cli", "names", "--list-page", "List_of_stand-in_people",
                        "--standin", server.url, "--contact", CONTACT, "--root", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode != 0 and "Traceback" not in r.stderr + r.stdout
    assert "error:" in r.stderr and "List of stand-in people" in r.stderr and server.url in r.stderr


# -- 4. a redirect loop resolved one step at a time -------------------------------------------------------------------
def test_a_redirect_loop_is_found_when_the_server_resolves_one_step(tmp_path, server, corpus):
    server.resolve_one_redirect_step()
    # only one end of the loop is asked about: the server answers "Loop Beta" (a redirect) as missing
    (tmp_path / "names.txt").write_text(f"Loop Alpha\n{corpus.people[0].title}\n")
    collect_names(NamesConfig(names_file=tmp_path / "names.txt", http=http(server)), tmp_path)
    rejected = {r["input"]: (r["status"], r["reason"]) for r in rows(tmp_path, "names-rejected.jsonl")}
    assert rejected == {"Loop Alpha": ("redirect_loop", "redirects loop back to 'Loop Alpha'")}
    assert [r["title"] for r in rows(tmp_path, "names.jsonl")] == [corpus.people[0].title]


# -- 5 and 6. file names never change a URL's path; metadata rules files out before any download --------------------
def _corpus_with(files: dict) -> object:
    """The stand-in's world with some people's lead images replaced by files with other metadata."""
    c = copy.deepcopy(build_corpus(12, seed=2))
    people = [p for p in c.people if p.image and not c.files[p.image].nonfree]
    for person, (name, changes) in zip(people, files.items(), strict=False):
        info = copy.deepcopy(c.files[person.image])
        info.name = name
        for k, v in changes.items():
            setattr(info, k, v)
        c.files[name] = info
        person.image = name
    return c


def test_hostile_file_names_and_metadata_rule_outs_download_nothing(tmp_path):
    corpus = _corpus_with({
        "../../etc/passwd.jpg": {}, "Drawing.svg": {"mime": "image/svg+xml"}, "Scan.pdf": {"mime": "application/pdf"},
        "Huge.jpg": {"size": 900_000_000}, "Tiny.jpg": {"width": 40, "height": 30},
        "Giant.jpg": {"width": 20_000, "height": 20_000},
    })
    with StandinServer(corpus) as server:
        config = NamesConfig(categories=(CATEGORY,), http=http(server))
        collect_names(config, tmp_path)
        fetch_images(ImagesConfig(thumb_width="original", http=config.http), tmp_path, progress=False)
        uploads = [r.path for r in server.log if r.endpoint == "upload"]
    by_file = {r["file"]: r for r in rows(tmp_path, "images.jsonl")}
    expected = {"../../etc/passwd.jpg": "bad_url", "Drawing.svg": "unsupported", "Scan.pdf": "unsupported",
                "Huge.jpg": "too_large", "Tiny.jpg": "too_small", "Giant.jpg": "too_large"}
    assert {f: by_file[f]["status"] for f in expected} == expected
    assert all(by_file[f]["reason"] for f in expected)
    assert not [p for p in uploads if any(token in p for token in ("passwd", "Drawing", "Scan", "Huge", "Tiny",
                                                                   "Giant"))]
    assert uploads and sum(r["status"] == "ok" for r in by_file.values()) >= 3  # the others were fetched


def test_the_download_path_check_refuses_dot_segments():
    from scraping.http import BadUrl, check_path

    for bad in ("http://h/a/../../etc/passwd", "http://h/a/%2e%2e/x.jpg", "http://h/./x.jpg"):
        with pytest.raises(BadUrl):
            check_path(bad)
    check_path("http://h/upload/a/ab/..%2F..%2Fetc%2Fpasswd.jpg")  # one (encoded) segment: its own name
    check_path("http://h/upload/a/ab/Mr._Smith..jpg")


# -- 7. titles normalised before they are requested or cached -------------------------------------------------------
def test_spellings_of_one_title_are_one_request_and_one_stage(tmp_path, server):
    spellings = ("List_of_stand-in_people", "List of stand-in people", "list of stand-in_people")
    config = NamesConfig(list_pages=spellings,
                         categories=("Stand-in_everyone", "category:Stand-in everyone"), humans_only=False,
                         http=http(server))
    assert config.list_pages == ("List of stand-in people",)
    assert config.categories == (f"Category:{CATEGORY}",)
    collect_names(config, tmp_path)
    assert sum(r.params.get("action") == "parse" for r in api_log(server)) == 1
    cm = [r.params.get("cmtitle") for r in api_log(server) if r.params.get("list") == "categorymembers"]
    assert cm == [f"Category:{CATEGORY}"]
    same = NamesConfig(list_pages=("List of stand-in people",), categories=(CATEGORY,), humans_only=False,
                       http=config.http)
    assert results_hash(same) == results_hash(config)


# -- 8. a failing Wikidata names itself and the way out ---------------------------------------------------------------
def test_a_failing_wikidata_filter_says_where_and_how_to_turn_it_off(tmp_path, server):
    server.add_fault("404", endpoint="wikidata", times=None)
    config = NamesConfig(list_pages=("List of stand-in people",), http=http(server))
    with pytest.raises(HttpError) as e:
        collect_names(config, tmp_path)
    message = str(e.value)
    assert config.http.wikidata_api_url in message and "--no-humans-only" in message and "HTTP 404" in message
    r = subprocess.run([sys.executable, "-m", "wikifaces.cli", "names", "--list-page", "List of stand-in people",
                        "--standin", server.url, "--contact", CONTACT, "--root", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--no-humans-only" in r.stderr
    ok = collect_names(config.model_copy(update={"humans_only": False}), tmp_path)
    assert ok.people > 10


# -- Wikimedia's rules as defaults ------------------------------------------------------------------------------------
def test_wikimedia_limits_are_the_defaults_and_overrides_need_permission():
    default = HttpConfig(contact=CONTACT)
    assert default.download_bytes_per_second <= 3_000_000 and default.max_concurrent_downloads <= 2
    for too_much in ({"download_bytes_per_second": 4_000_000}, {"max_concurrent_downloads": 3}):
        with pytest.raises(ValueError, match="beyond_policy"):
            HttpConfig(contact=CONTACT, **too_much)
        assert HttpConfig(contact=CONTACT, beyond_policy=True, **too_much)
        # the policy is Wikimedia's: a local server is not bound by it
        assert HttpConfig(api_url="http://127.0.0.1:1/w/api.php", allowed_download_hosts=("127.0.0.1:1",), **too_much)
    for width in (20, 40, 60, 120, 3840, "original"):
        assert ImagesConfig(thumb_width=width).thumb_width == width
    for width in (100, 400, 800):
        with pytest.raises(ValueError):
            ImagesConfig(thumb_width=width)


def test_the_standin_refuses_thumbnail_widths_off_the_steps(server, corpus):
    name = next(n for n, f in corpus.files.items() if f.width > 500)
    ok = requests.get(f"{server.url}/upload/wikipedia/commons/thumb/0/00/{name}/500px-{name}",
                      headers={"User-Agent": "wikifaces-test"}, timeout=30)
    off = requests.get(f"{server.url}/upload/wikipedia/commons/thumb/0/00/{name}/400px-{name}",
                       headers={"User-Agent": "wikifaces-test"}, timeout=30)
    assert ok.status_code == 200 and off.status_code == 429


def test_the_standin_names_stay_distinct_in_large_worlds():
    """A scale rehearsal's world of 100,000 people had 38,881 titles (one middle initial wrapped
    after 26 rounds of the first-last pairs); smaller worlds keep the names they had."""
    import random

    from wikifaces.fixtures.standin.corpus import FIRST, LAST, _names

    pairs = len(FIRST) * len(LAST)
    for people in (27 * pairs, 100_000):
        names = _names(people, random.Random(0))
        assert len(names) == len(set(names)) == people
    assert len({n.count(".") for n in _names(27 * pairs, random.Random(0))}) == 2  # none or one initial
    assert "Ada A. Abbott" in _names(2 * pairs, random.Random(0))


def test_the_standin_page_ids_are_the_sorted_positions_even_as_tables_grow():
    """The stand-in numbers files and categories by their sorted position (sorting on every request
    cost 27 ms a file at 256,000 files); the index it keeps follows a table that grows."""
    c = copy.deepcopy(build_corpus(12, seed=2))
    for table in ("files", "categories", "commons_categories"):
        keys = getattr(c, table)
        assert [c.ordinal(table, k) for k in keys] == [sorted(keys).index(k) for k in keys]
    first = min(c.files)
    before = c.ordinal("files", first)
    c.files["!" + first] = c.files[first]  # sorts before every name
    assert c.ordinal("files", first) == before + 1 and c.ordinal("files", "!" + first) == 0


def test_the_standin_keeps_a_bounded_render_cache(server, corpus, monkeypatch):
    """A rehearsal downloads every file once (~25 GB at 100,000 people): the stand-in keeps only the
    most recently asked renders, and a file asked again is the same bytes whether cached or not."""
    import wikifaces.fixtures.standin.server as standin_server

    monkeypatch.setattr(standin_server, "RENDER_CACHE_BYTES", 300_000)
    names = [n for n, f in corpus.files.items() if f.gain != 1.0][:8]
    assert len(names) == 8

    def get(name: str) -> bytes:
        r = requests.get(f"{server.url}/upload/wikipedia/commons/0/00/{name}", headers={"User-Agent": "wikifaces-test"},
                         timeout=30)
        assert r.status_code == 200
        return r.content

    first = [get(n) for n in names]
    state = server._server.state
    assert sum(map(len, first)) > 300_000  # more than the bound was asked
    assert state.render_cache_bytes == sum(map(len, state.render_cache.values())) <= 300_000
    assert 1 <= len(state.render_cache) < len(names) and (names[-1], None) in state.render_cache
    assert [get(n) for n in names] == first == [corpus.render(n) for n in names]


def test_the_standin_can_keep_only_its_latest_requests(corpus):
    """A rehearsal's stand-in would hold every request (~370,000 at 100,000 people); with
    `log_limit` it keeps the latest, in order, and still answers every one."""
    with StandinServer(corpus, log_limit=3) as s:
        titles = [p.title for p in corpus.people[:5]]
        for t in titles:
            r = requests.get(f"{s.url}/w/api.php", params={"action": "query", "titles": t, "format": "json"},
                             headers={"User-Agent": "wikifaces-test"}, timeout=30)
            assert r.status_code == 200 and r.json()["query"]["pages"]
        assert [e.params["titles"] for e in s.log] == titles[-3:]


# -- 9. transparency is composited, never dropped -------------------------------------------------------------------
def _alpha_only(shape: str) -> Image.Image:
    """RGB all white; the picture lives in the alpha channel (a white logo on transparency)."""
    alpha = np.zeros((96, 96), np.uint8)
    if shape == "square":
        alpha[20:76, 20:76] = 255
    elif shape == "bar":
        alpha[40:56, :] = 255
    else:
        yy, xx = np.mgrid[:96, :96]
        alpha[(yy - 48) ** 2 + (xx - 48) ** 2 < 30**2] = 255
    return Image.fromarray(np.dstack([np.full((96, 96, 3), 255, np.uint8), alpha]), "RGBA")


def test_composite_alpha_for_every_mode():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[1, 1] = (0, 0, 255, 128)
    out = composite_alpha(rgba)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [128, 128, 128]
    assert out[1, 1].tolist() == [64, 64, 192]
    la = Image.fromarray(np.dstack([np.zeros((2, 2), np.uint8), np.array([[255, 0], [0, 255]], np.uint8)]), "LA")
    assert composite_alpha(la)[..., 0].tolist() == [[0, 128], [128, 0]]
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    import io

    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=1)
    assert decode_rgb(buf.getvalue()).tolist() == [[[128, 128, 128]] * 2] * 2


@pytest.mark.parametrize("shape", [(90, 300, 3), (300, 90, 3), (90, 90, 3)])
@pytest.mark.parametrize("size", [64, 90, 180])
def test_centre_square_keeps_the_middle_square_whole(shape, size):
    """What LSUN import stores and training reads: the centred square (quartered white/black/grey/
    dark), none of the coloured margins either side, at size x size, shrunk or enlarged."""
    img = np.zeros(shape, np.uint8)
    h, w = shape[:2]
    if w > h:
        img[:, : (w - h) // 2] = (0, 0, 255)
        img[:, (w + h) // 2 :] = (255, 0, 0)
    elif h > w:
        img[: (h - w) // 2] = (0, 255, 0)
        img[(h + w) // 2 :] = (255, 0, 255)
    y, x, s = (h - min(h, w)) // 2, (w - min(h, w)) // 2, min(h, w)
    for (dy, dx), v in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [255, 0, 128, 40], strict=True):
        img[y + dy * s // 2 : y + (dy + 1) * s // 2, x + dx * s // 2 : x + (dx + 1) * s // 2] = v
    out = centre_square(img, size)
    assert out.shape == (size, size, 3) and out.flags.c_contiguous
    q, m = size // 2, max(2, size // 16)  # each quarter's inside, clear of the filter's blur
    inner = [out[m : q - m, m : q - m], out[m : q - m, q + m : size - m], out[q + m : size - m, m : q - m],
             out[q + m : size - m, q + m : size - m]]
    assert [int(np.median(part)) for part in inner] == [255, 0, 128, 40]
    assert (np.abs(out.astype(int) - out[..., :1]) <= 2).all(), "a coloured margin is in the square"


def test_lsun_import_composites_transparency_so_alpha_pictures_stay_distinct(tmp_path):
    from dedup import DedupConfig, LsunImportConfig, find_duplicates, import_lsun
    from shards import open_dataset

    folder = tmp_path / "folder"
    folder.mkdir()
    for shape in ("square", "bar", "disc"):
        _alpha_only(shape).save(folder / f"{shape}.png")
    for size in (None, 64):
        root = tmp_path / f"root-{size}"
        import_lsun(LsunImportConfig(source=folder, category="alpha", size=size, encoding="png", workers=1), root,
                    progress=False)
        ds = open_dataset(root / "interim" / "lsun" / "alpha" / "shards")
        images = [ds[i].image for i in range(len(ds))]
        assert len(images) == 3 and all(img.std() > 20 for img in images)  # not blank
        assert all(ds.read_meta(i)["alpha"] == "transparency composited over #808080" for i in range(3))
        summary = find_duplicates(DedupConfig(threshold=5), root / "interim" / "lsun" / "alpha" / "shards",
                                  progress=False)
        assert summary.removed == 0  # three different pictures, not three blank duplicates


# -- 11 (unit): per-item journals are keyed by the stage's parameters and code ---------------------------------------
def test_a_journal_ignores_rows_of_another_version(tmp_path):
    with Journal(tmp_path / "j.jsonl", key=lambda r: r["id"], version="a@1") as j:
        j.append({"id": "x", "v": 1})
    with Journal(tmp_path / "j.jsonl", key=lambda r: r["id"], version="b@1") as j:
        j.append({"id": "y", "v": 2})
    assert Journal(tmp_path / "j.jsonl", key=lambda r: r["id"], version="a@1").latest() == {"x": {"id": "x", "v": 1}}
    assert Journal(tmp_path / "j.jsonl", key=lambda r: r["id"], version="b@1").latest() == {"y": {"id": "y", "v": 2}}
    assert Journal(tmp_path / "j.jsonl", key=lambda r: r["id"], version="c@2").latest() == {}


# -- 11 (library): force fetches everyone again; a plain rerun resumes ------------------------------------------------
def test_force_fetches_every_image_again(tmp_path, server):
    config = NamesConfig(categories=(CATEGORY,), http=http(server))
    collect_names(config, tmp_path)
    first = fetch_images(ImagesConfig(http=config.http), tmp_path, progress=False)
    assert first.counts["fetched_now"] == first.counts["files"] > first.people > 20  # several files a person
    assert fetch_images(ImagesConfig(http=config.http), tmp_path, progress=False).counts["fetched_now"] == 0
    server.clear_log()
    forced = fetch_images(ImagesConfig(http=config.http), tmp_path, progress=False, force=True)
    assert forced.counts["fetched_now"] == first.counts["files"]
    assert sum(r.endpoint == "upload" for r in server.log) == first.downloaded
    # another thumbnail width is another result: earlier rows are not reused for it
    other = fetch_images(ImagesConfig(thumb_width=500, http=config.http), tmp_path, progress=False)
    assert other.counts["fetched_now"] == first.counts["files"]


def test_cli_refresh_cache_asks_the_api_again(tmp_path, server):
    from typer.testing import CliRunner

    from wikifaces.cli import app

    args = ["names", "--category", CATEGORY, "--standin", server.url, "--contact", CONTACT, "--root", str(tmp_path)]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    server.clear_log()
    assert runner.invoke(app, args).exit_code == 0 and not api_log(server)  # answered by the cache
    r = runner.invoke(app, [*args, "--refresh-cache", "--force"])  # unchanged, the stage would be skipped
    assert r.exit_code == 0 and api_log(server) and "0 from cache" in r.output


@pytest.mark.parametrize("torn", [b'{"id": "t", "v": "', b'{"id": "t", "v": "' + b"x" * 200_000])
def test_a_torn_journal_tail_is_cut_however_long(tmp_path, torn):
    """A killed writer's half line is cut before the next append, also when it is longer than the
    chunk the repair reads backwards (the journal is never read whole to find it)."""
    path = tmp_path / "j.jsonl"
    with Journal(path, key=lambda r: r["id"]) as j:
        for i in range(3):
            j.append({"id": str(i), "v": "y" * 50_000})
    with open(path, "ab") as fh:
        fh.write(torn)
    with Journal(path, key=lambda r: r["id"]) as j:
        j.append({"id": "after", "v": 1})
    rows = dict(Journal(path, key=lambda r: r["id"]).rows())
    assert list(rows) == ["0", "1", "2", "after"] and rows["after"] == {"id": "after", "v": 1}
    assert path.read_bytes().endswith(b'"after", "v": 1}\n')


def test_a_journal_of_only_a_torn_line_starts_afresh(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"id": "t"' + b"x" * 100_000)
    with Journal(path, key=lambda r: r["id"]) as j:
        j.append({"id": "a"})
    assert Journal(path, key=lambda r: r["id"]).latest() == {"a": {"id": "a"}}


def test_tables_are_read_as_streams_and_forgive_only_a_torn_last_line(tmp_path):
    """read_jsonl holds one row at a time (a 20 MB table's first row costs kilobytes, not the
    table), skips a killed writer's half last line, and refuses a damaged line elsewhere."""
    import tracemalloc

    path = tmp_path / "t.jsonl"
    write_jsonl(path, ({"id": i, "v": "x" * 2000, "note": "caf\u00e9 \u2028 line"} for i in range(10_000)))
    tracemalloc.start()
    rows = read_jsonl(path)
    first = next(rows)
    held = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows.close()
    assert first["id"] == 0 and held < 1_000_000, held
    assert [r["id"] for r in read_jsonl(path)] == list(range(10_000))
    assert next(read_jsonl(path))["note"] == "caf\u00e9 \u2028 line"  # only "\n" ends a line
    with open(path, "ab") as fh:
        fh.write(b'{"id": 10000, "v": "hal')
    assert sum(1 for _ in read_jsonl(path)) == 10_000
    damaged = tmp_path / "d.jsonl"
    damaged.write_text('{"id": 1}\n{"id": 2\n{"id": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        list(read_jsonl(damaged))


def test_row_index_reads_back_a_groups_rows_in_file_order(tmp_path):
    """RowIndex finds one group's rows across files (earlier table, then journal), in each file's
    order, applies the journal's version rule again on reading, and costs ~16 bytes a row."""
    import tracemalloc

    from wikifaces.core.tables import RowIndex

    table = tmp_path / "table.jsonl"
    write_jsonl(table, ({"person_id": f"P{i % 5000}", "n": i, "pad": "x" * 300} for i in range(20_000)))
    journal = Journal(tmp_path / "journal.jsonl", key=lambda r: str(r["n"]), version="v2")
    for n, version in ((7, "v2"), (8, "v1"), (9, "v2")):
        with Journal(journal.path, key=journal.key, version=version) as writer:
            writer.append({"person_id": "P3", "n": n})
    with open(journal.path, "ab") as fh:
        fh.write(b'{"person_id": "P3", "n": 10, "_journal_')  # a killed writer's torn line
    index = RowIndex()
    tracemalloc.start()
    assert index.add(table, group=lambda r: r["person_id"]) == 20_000
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held < 20_000 * 40, held
    assert index.add(journal.path, group=lambda r: r["person_id"], keep=journal.current) == 2
    got = list(index.rows(["P3", "P4999", "nobody"]))
    assert [(r["person_id"], r["n"]) for r in got] == [
        ("P3", 3), ("P4999", 4999), ("P3", 5003), ("P4999", 9999), ("P3", 10003), ("P4999", 14999),
        ("P3", 15003), ("P4999", 19999), ("P3", 7), ("P3", 9)]
    assert all("_journal_version" not in r for r in got)
    assert list(index.rows([])) == [] and len(index) == 20_002
    assert index.has(["P3", "nobody", "P4999", "P5000"]).tolist() == [True, False, True, False]


def test_journals_are_keyed_by_the_code_not_by_unrelated_edits(tmp_path):
    """The code fingerprint that keys journals changes with a .py file, not with the README."""
    from .conftest import REPO

    for name in ("wikifaces", "scraping", "faces", "dedup", "shards", "training", "flows", "README.md"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)

    def fingerprint() -> str:
        r = subprocess.run([sys.executable, "-c", "from wikifaces.core.version import code_fingerprint as f; "
                            "print(f())"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)})
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    first = fingerprint()
    (tmp_path / "README.md").write_text("edited\n")
    assert fingerprint() == first
    stage = tmp_path / "faces" / "stage.py"
    stage.write_text(stage.read_text() + "\n# a change to the code\n")
    assert fingerprint() != first


@pytest.mark.parametrize("keep", [[0, 1, 1], [0, 10_000]])
def test_publish_refuses_a_damaged_keep_list(pipeline_root, tmp_path, keep):
    """publish writes without holding every key (its records are unique by construction), so a
    keep list that repeats a record or names one the candidates lack is refused, not written."""
    from wikifaces.core.errors import UserError
    from wikifaces.core.paths import DataRoot
    from wikifaces.publish import PublishConfig, publish_dataset

    checked = Path("interim/faces/checked")
    shutil.copytree(pipeline_root.root / checked / "shards", tmp_path / checked / "shards")
    (tmp_path / checked / "dedup").mkdir()
    np.save(tmp_path / checked / "dedup" / "keep.npy", np.array(keep, np.int64))
    with pytest.raises(UserError, match=r"keep\.npy .* repeats records or names records the candidates lack"):
        publish_dataset(PublishConfig(), DataRoot(tmp_path))
    assert not (tmp_path / "processed" / "faces-64" / "manifest.json").exists()
    np.save(tmp_path / checked / "dedup" / "keep.npy", np.array([0, 1], np.int64))
    assert publish_dataset(PublishConfig(), DataRoot(tmp_path)).records == 2


# -- what killed writes leave behind ------------------------------------------------------------------------------
_WRITER = """
import sys, time
from wikifaces.core.files import atomic_open
with atomic_open(sys.argv[1]) as fh:
    fh.write(b"x" * 100_000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def _writer(path: Path) -> subprocess.Popen:
    """A process in the middle of an atomic write of `path` (100 kB so far)."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def test_a_rerun_stage_removes_what_killed_writes_left_but_not_a_live_writers(tmp_path):
    """A killed stage left its table's temporary file beside the table (a 100,000-people rehearsal's
    images stage: three of 20-30 MB after three cuts); the stage's next run removes such leftovers
    in the folders it writes, and only those: a temporary a live process is still writing stays."""
    import cv2

    from faces import DetectConfig
    from wikifaces.core.files import sweep_temporaries
    from wikifaces.fixtures.samples import all_photos, load_rgb
    from wikifaces.pipeline import run_stage

    from .conftest import build_images_root

    photo = next(p for p in all_photos() if p.id == "astronaut" and p.path() is not None)
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(load_rgb(photo.path()), cv2.COLOR_RGB2BGR))
    root = tmp_path / "root"
    build_images_root(root, [("astronaut", jpeg.tobytes())])
    faces = root / "interim" / "faces"
    killed = _writer(faces / "faces.jsonl")
    killed.kill()
    killed.wait()
    live = _writer(faces / "notes.txt")
    try:
        empty = faces / ".faces-contact.png.abcd1234.tmp"  # a writer killed before it wrote anything
        empty.touch()
        assert len(list(faces.glob(".*.tmp"))) == 3
        run_stage("detect", DetectConfig(), root, progress=False)
        left = [p.name for p in faces.glob(".*.tmp")]
        assert len(left) == 1 and left[0].startswith(".notes.txt.")
        assert (faces / "faces.jsonl").is_file()  # the stage itself wrote its table
    finally:
        live.kill()
        live.wait()
    assert [(p.name.startswith(".notes.txt."), size) for p, size in sweep_temporaries(faces)] == [(True, 100_000)]


def test_a_temporary_swept_before_its_writer_locked_it_is_replaced(tmp_path, monkeypatch):
    """A writer creates its temporary, then locks it; a sweep in between (the file unlocked: it looks
    abandoned) removes it. The writer notices and takes another, so its write still lands."""
    import tempfile

    import wikifaces.core.files as files

    real, made = tempfile.mkstemp, []

    def swept_once(*args, **kw):
        fd, name = real(*args, **kw)
        made.append(name)
        if len(made) == 1:
            assert [p.name for p, _ in files.sweep_temporaries(tmp_path)] == [Path(name).name]
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", swept_once)
    files.atomic_write_text(tmp_path / "table.jsonl", "row\n")
    assert len(made) == 2 and (tmp_path / "table.jsonl").read_text() == "row\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "table.jsonl"]
