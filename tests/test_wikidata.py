"""Names at scale: the Wikidata sources (the Query Service and the JSON dump) against the
stand-in's real HTTP SPARQL endpoint and real gz/bz2 dump files."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scraping.config import NamesConfig
from scraping.dump import DumpError, scan_lines
from scraping.http import HttpError
from scraping.names import collect_names
from scraping.sparql import JOURNAL_FILE as SPARQL_JOURNAL
from scraping.sparql import Slice, build_query
from tests.conftest import REPO, standin_http
from wikifaces.cli import app
from wikifaces.fixtures.standin import build_corpus
from wikifaces.fixtures.standin.sparql import answer
from wikifaces.fixtures.wikidata import dump_entities, write_dump

KEYS = ("person_id", "title", "label", "wiki_title", "pageid", "lead_image", "commons_category", "birth_year")


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(60)


def sparql(server, root: Path, **kw) -> tuple[dict[str, dict], dict]:
    http = standin_http(server, **kw.pop("http", {}))
    summary = collect_names(NamesConfig(source="wikidata-sparql", http=http, **kw), root, progress=False)
    return _rows(root), summary.counts


def dump(server, root: Path, path: Path, **kw) -> tuple[dict[str, dict], dict]:
    http = standin_http(server, **kw.pop("http", {}))
    summary = collect_names(NamesConfig(source="wikidata-dump", dump_file=path, http=http, **kw), root, progress=False)
    return _rows(root), summary.counts


def _rows(root: Path) -> dict[str, dict]:
    lines = (Path(root) / "raw/wikipedia/names.jsonl").read_text().splitlines()
    return {r["person_id"]: {k: r[k] for k in KEYS} for r in map(json.loads, lines)}


def expected(corpus, born_after=None, has_image=False, has_category=False, occupations=(), countries=()):
    """The stand-in humans the filters should keep, computed from the corpus itself."""
    out = set()
    for p in corpus.humans:
        if not (p.p18 or p.commons_category or p.article):
            continue
        if born_after is not None and (p.birth_year is None or p.birth_year < born_after):
            continue
        if (has_image and not p.p18) or (has_category and not p.commons_category):
            continue
        if (occupations and p.occupation not in occupations) or (countries and p.citizenship not in countries):
            continue
        out.add(p.qid)
    return out


@pytest.fixture(scope="module")
def dump_gz(corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("dump") / "latest-all.json.gz"
    write_dump(path, dump_entities(corpus, fillers=400))
    return path


def ours(rows: dict, corpus) -> dict:
    qids = {p.qid for p in corpus.humans}
    return {q: r for q, r in rows.items() if q in qids}


def test_the_same_people_from_sparql_the_dump_and_the_category_route(tmp_path, server, corpus, dump_gz):
    by_sparql, _ = sparql(server, tmp_path / "s")
    by_dump, _ = dump(server, tmp_path / "d", dump_gz)
    assert set(by_sparql) == expected(corpus) and len(by_sparql) > 50
    assert ours(by_dump, corpus) == by_sparql  # every field, including page ids looked up after
    assert len(by_dump) > len(by_sparql)  # the dump's other humans (fillers) are found too
    # Wikidata-only people (no article) have no page id; the rest have theirs, resolved by the API
    assert {q for q, r in by_sparql.items() if r["pageid"] is None} == {p.qid for p in corpus.wikidata_only} & set(
        by_sparql)
    # where they overlap, the old category route names the same pages and the same lead images
    http = standin_http(server)
    collect_names(NamesConfig(categories=("Stand-in everyone",), humans_only=True, born_after=1900, http=http),
                  tmp_path / "c", progress=False)
    by_category = _rows(tmp_path / "c")
    by_sparql_1900, _ = sparql(server, tmp_path / "s1900", born_after=1900)
    overlap = set(by_category) & set(by_sparql_1900)
    assert overlap == set(by_category)  # every person of the category with a birth >= 1900
    for q in overlap:
        assert by_category[q]["pageid"] == by_sparql_1900[q]["pageid"]
        assert by_category[q]["title"] == by_sparql_1900[q]["title"]
        assert by_category[q]["birth_year"] == by_sparql_1900[q]["birth_year"]
        if by_category[q]["lead_image"]:
            assert by_category[q]["lead_image"] == by_sparql_1900[q]["lead_image"]


@pytest.mark.parametrize("filters", [
    {"born_after": 1900, "has_image": True},
    {"has_commons_category": True},
    {"occupations": ("Q901", "Q36180")},
    {"citizenships": ("Q142",), "born_after": 1850},
])
def test_filters_keep_exactly_the_people_they_name(tmp_path, server, corpus, dump_gz, filters):
    by_sparql, _ = sparql(server, tmp_path / "s", **filters)
    by_dump, _ = dump(server, tmp_path / "d", dump_gz, **filters)
    want = expected(corpus, filters.get("born_after"), filters.get("has_image", False),
                    filters.get("has_commons_category", False), filters.get("occupations", ()),
                    filters.get("citizenships", ()))
    assert set(by_sparql) == want and want
    assert ours(by_dump, corpus) == by_sparql


def test_a_window_that_times_out_is_halved_and_gives_the_same_rows(tmp_path, server, corpus):
    reference, _ = sparql(server, tmp_path / "ref", http={"sparql_slice_rows": 10_000})
    server.sparql.timeout_rows = 6  # a query over 6 rows is stopped as WDQS stops one at 60 s
    server.clear_log()
    rows, counts = sparql(server, tmp_path / "t", http={"sparql_slice_rows": 10_000})
    server.sparql.timeout_rows = None
    assert rows == reference
    assert counts["halvings"] >= 3
    statuses = Counter(e.status for e in server.log if e.endpoint == "sparql")
    assert statuses[500] == counts["halvings"] and statuses[200] == counts["slices"]
    # a timed-out window is asked again as its first half
    windows = [_window(e.params["query"]) for e in server.log if e.endpoint == "sparql"]
    failed = [(w, nxt) for e, w, nxt in zip(server.log, windows, windows[1:], strict=False) if e.status == 500]
    assert failed and all(nxt[0] == w[0] and nxt[1] - nxt[0] == (w[1] - w[0]) // 2 for w, nxt in failed)


def _window(query: str) -> tuple[int, int]:
    import datetime as dt
    import re

    days = [dt.date.fromisoformat(d).toordinal() for d in re.findall(r'"(\d{4}-\d\d-\d\d)T', query)]
    return (days[0], days[1]) if len(days) == 2 else (0, 0)


def test_a_one_day_window_that_still_times_out_is_split_by_route(tmp_path):
    from wikifaces.fixtures.standin import StandinServer

    world = build_corpus(60)
    route = lambda p: "image" if p.p18 else "category" if p.commons_category else "article"  # noqa: E731
    for kind in ("image", "category", "article"):  # six people born on one day, two by each route
        for p in [p for p in world.humans if route(p) == kind and (p.p18 or p.commons_category or p.article)][:2]:
            p.birth_year = 1901
    routes = Counter((p.birth_year, route(p)) for p in world.humans if p.birth_year and p.birth_year >= 1800)
    days = Counter(p.birth_year for p in world.humans if p.birth_year and p.birth_year >= 1800)
    limit = max(routes.values())
    assert days[1901] > limit  # that day times out whole, and each route alone fits
    with StandinServer(world) as server:
        reference, _ = sparql(server, tmp_path / "ref", born_after=1800)
        server.sparql.timeout_rows = limit
        rows, counts = sparql(server, tmp_path / "t", born_after=1800)
        assert rows == reference and counts["route_splits"] >= 1
        server.sparql.timeout_rows = limit - 1  # now some route of some day is too big even alone
        with pytest.raises(HttpError, match=r"times out on births from .* even alone"):
            sparql(server, tmp_path / "u", born_after=1800)


def test_429_is_waited_out_and_the_error_budget_stops_the_run_cleanly(tmp_path, server, corpus):
    reference, _ = sparql(server, tmp_path / "ref")
    server.add_fault("429", endpoint="sparql", times=2, retry_after=0)
    rows, counts = sparql(server, tmp_path / "a")
    assert rows == reference and counts["sparql"]["retries"] == 2
    # errors that keep coming (timeouts here): the run stops before WDQS's budget, the slices so far journalled
    server.sparql.timeout_rows = 6
    try:
        with pytest.raises(HttpError, match="stopping: 4 errors from the Wikidata Query Service within a minute"):
            sparql(server, tmp_path / "b", http={"sparql_errors_per_minute": 4, "sparql_slice_rows": 10_000})
    finally:
        server.sparql.timeout_rows = None
    journal = (tmp_path / "b/raw/wikipedia" / SPARQL_JOURNAL).read_text().splitlines()
    assert len(journal) >= 2
    server.clear_log()
    rows, counts = sparql(server, tmp_path / "b")
    assert rows == reference and counts["resumed_slices"] == len(journal)


_RUN = textwrap.dedent("""
    import sys
    from scraping.config import NamesConfig
    from scraping.names import collect_names
    config = NamesConfig.model_validate_json(sys.argv[2])
    if len(sys.argv) > 3:  # die by SIGKILL right after the n-th journal line, as a crash would
        import os, signal
        from wikifaces.core.tables import Journal
        append, seen = Journal.append, []
        def dying(self, row):
            append(self, row)
            seen.append(1)
            if len(seen) >= int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)
        Journal.append = dying
    collect_names(config, sys.argv[1], progress=False)
""")


def _start(root: Path, config: NamesConfig, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _RUN, str(root), config.model_dump_json(), *extra],
                            cwd=REPO, env=env, stderr=subprocess.PIPE)


def test_sigkill_mid_slice_then_rerun_gives_the_same_rows(tmp_path, server, corpus):
    http = standin_http(server, sparql_slice_rows=4)
    config = NamesConfig(source="wikidata-sparql", http=http)
    collect_names(config, tmp_path / "clean", progress=False)
    server.sparql.time_scale = 0.5  # 0.2 s a query or more: slow enough to be killed inside one
    journal = tmp_path / "run/raw/wikipedia" / SPARQL_JOURNAL
    proc = _start(tmp_path / "run", config)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 3):
            time.sleep(0.02)
        while time.monotonic() < deadline and not server.in_flight("sparql"):
            time.sleep(0.01)  # kill it while a slice's query is on its way
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        server.sparql.time_scale = 0.0
    assert proc.returncode == -signal.SIGKILL
    done = journal.read_text().count("\n")
    assert not (tmp_path / "run/raw/wikipedia/names.jsonl").exists() and done >= 3
    summary = collect_names(config, tmp_path / "run", progress=False)
    assert summary.counts["resumed_slices"] == done
    assert _rows(tmp_path / "run") == _rows(tmp_path / "clean")
    assert not journal.exists()


def test_sigkill_mid_dump_then_rerun_gives_the_same_rows(tmp_path, server, corpus, dump_gz):
    http = standin_http(server)
    config = NamesConfig(source="wikidata-dump", dump_file=dump_gz, dump_chunk_bytes=32 << 10,
                         dump_checkpoint_seconds=0, http=http)
    collect_names(config, tmp_path / "clean", progress=False)
    proc = _start(tmp_path / "run", config, "6")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    journal = tmp_path / "run/raw/wikipedia/names-dump.journal.jsonl"
    upto = [json.loads(line)["upto"] for line in journal.read_text().splitlines()]
    assert len(upto) == 6 and upto == sorted(upto)
    summary = collect_names(config, tmp_path / "run", progress=False)
    assert summary.counts["resumed_from_line"] == upto[-1] > 0
    clean = (tmp_path / "clean/raw/wikipedia/names.jsonl").read_text()
    assert (tmp_path / "run/raw/wikipedia/names.jsonl").read_text() == clean  # no row lost, none twice


def test_the_compact_id_set_agrees_with_a_set_across_merges():
    """names tells people found twice apart with IdSet (Q-id numbers in a sorted array, merged in
    batches): it answers as a set would, before and after merges, for Q-ids and other ids."""
    import random

    from scraping.wikidata import IdSet

    rng = random.Random(1)
    ids, ref = IdSet(), set()
    ids.MERGE = 7  # many merges
    for _ in range(20_000):
        qid = rng.choice([f"Q{rng.randrange(5000)}", f"Q{rng.randrange(10**12)}", f"P{rng.randrange(40)}", "Q12x"])
        assert ids.add(qid) == (qid not in ref), qid
        ref.add(qid)
    assert len(ids) == len(ref) and len(ids._sorted) > 3000  # most of them in the array


def test_names_streams_a_large_dump_instead_of_holding_its_people(tmp_path, server):
    """The dump source hands people to names' writer as each checkpoint is journalled: reading
    ~12,000 people (and resuming over their journal) peaks far below the rows' own size."""
    import tracemalloc

    path = tmp_path / "dump.json"
    write_dump(path, dump_entities(None, fillers=20_000, human_share=1.0))
    config = NamesConfig(source="wikidata-dump", dump_file=path, resolve_pages=False, dump_checkpoint_seconds=0,
                         dump_chunk_bytes=1 << 16, http=standin_http(server))
    peaks = []
    for _ in range(2):  # the second run reads the first's table again from nothing but the dump
        tracemalloc.start()
        summary = collect_names(config, tmp_path / "run", progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    rows = [json.loads(line) for line in (tmp_path / "run/raw/wikipedia/names.jsonl").read_text().splitlines()]
    assert summary.people == len(rows) > 10_000 and len({r["person_id"] for r in rows}) == len(rows)
    assert [r["dump_line"] for r in rows] == sorted(r["dump_line"] for r in rows)
    # holding the rows as dicts took ~1 kB a person here (13 MB); the writer holds their ids (~10 bytes)
    assert max(peaks) < (2 << 20) + len(rows) * 100, peaks


def test_a_malformed_line_is_a_rejected_row_and_bz2_reads_the_same(tmp_path, server, corpus, dump_gz):
    bad = tmp_path / "bad.json.bz2"
    write_dump(bad, dump_entities(corpus, fillers=400), malformed_at=1)  # the first entity: a stand-in human
    rows, counts = dump(server, tmp_path / "b", bad)
    rejected = [json.loads(x) for x in (tmp_path / "b/raw/wikipedia/names-rejected.jsonl").read_text().splitlines()]
    assert [(r["status"], r["line"]) for r in rejected] == [("malformed", 2)]  # line 1 is "["
    assert "line 2 of the dump is not an entity" in rejected[0]["reason"]
    assert counts["decompressor"] == "indexed_bzip2"
    good, _ = dump(server, tmp_path / "g", dump_gz)
    first = corpus.humans[0].qid
    assert first not in rows and {q: r for q, r in good.items() if q != first} == rows
    # a download cut short: a clear error, the lines before journalled
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(dump_gz.read_bytes()[: dump_gz.stat().st_size // 2])
    with pytest.raises(DumpError, match="could not be read to the end after line"):
        dump(server, tmp_path / "c", cut)


@pytest.mark.parametrize("chunk", [7, 64, 1000, 1 << 16])
def test_the_chunked_scan_finds_every_line_and_resumes_exactly(chunk):
    import io

    from scraping.dump import NEEDLE

    lines = [b"[", *(b'{"a":%d,%s}' % (i, NEEDLE if i % 3 == 0 else b'"x"') + b"," for i in range(200)), b"]"]
    data = b"\n".join(lines) + b"\n"
    want = [(n, line) for n, line in enumerate(lines, 1) if NEEDLE in line]
    for skip in (0, 1, 50, 150, 202):
        got, total = [], 0
        for done, hits in scan_lines(io.BytesIO(data), skip, chunk):
            got, total = got + hits, done
        assert got == [(n, line) for n, line in want if n > skip] and total == len(lines)


def test_the_queries_are_sparql_the_standin_reads_as_written(corpus):
    config = NamesConfig(source="wikidata-sparql", born_after=1900, occupations=("Q901",))
    import datetime as dt

    s = Slice(dt.date(1900, 1, 1).toordinal(), dt.date(1950, 1, 1).toordinal(), "category")
    q = build_query(config, s)
    assert 'FILTER(?birth >= "1900-01-01T00:00:00Z"^^xsd:dateTime)' in q and "VALUES ?occupation { wd:Q901 }" in q
    got = {b["person"]["value"].rsplit("/", 1)[1] for b in answer(corpus, q)}
    want = {p.qid for p in corpus.humans if p.birth_year and 1900 <= p.birth_year < 1950 and not p.p18
            and p.commons_category and p.occupation == "Q901"}
    assert got == want


def test_cli_sparql_and_dump_sources_end_to_end_into_images(tmp_path, server, corpus, dump_gz):
    runner = CliRunner()
    base = ["--standin", server.url, "--contact", "tests@wikifaces.invalid", "--root", str(tmp_path)]
    r = runner.invoke(app, ["names", "--source", "wikidata-sparql", "--born-after", "1900", "--has-image", *base])
    assert r.exit_code == 0, r.output
    people = [json.loads(x) for x in (tmp_path / "raw/wikipedia/names.jsonl").read_text().splitlines()]
    assert {p["person_id"] for p in people} == expected(corpus, 1900, has_image=True)
    r = runner.invoke(app, ["images", *base])
    assert r.exit_code == 0, r.output
    images = [json.loads(x) for x in (tmp_path / "raw/wikipedia/images.jsonl").read_text().splitlines()]
    assert {i["person_id"] for i in images} == {p["person_id"] for p in people}
    assert len({i["person_id"] for i in images if i["status"] == "ok"}) >= len(people) - 2
    # no second look-up of the files: imageinfo was asked for the P18 names the rows carry
    wikidata_only = {p.qid for p in corpus.wikidata_only}
    assert any(i["status"] == "ok" and i["person_id"] in wikidata_only for i in images)
    r = runner.invoke(app, ["names", "--source", "wikidata-dump", str(dump_gz), "--force", *base])
    assert r.exit_code == 0, r.output
    assert "people" in r.output
    r = runner.invoke(app, ["names", "--source", "wikidata-dump", *base])
    assert r.exit_code != 0 and "give its file" in r.output


def test_gzip_and_bz2_writers_make_real_dumps(tmp_path, corpus):
    for name, opener in (("d.json.gz", gzip.open), ("d.json.bz2", bz2.open)):
        write_dump(tmp_path / name, dump_entities(corpus, fillers=20))
        text = opener(tmp_path / name).read().decode()
        entities = json.loads(text)  # the whole file is one JSON array, as Wikidata's is
        assert len(entities) == 20 + len(corpus.humans) + len(corpus.other_pages)
        assert text.startswith("[\n{") and text.endswith("}\n]\n")
