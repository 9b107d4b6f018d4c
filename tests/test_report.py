"""The build report: the data behind each section, escaping, and the page in a real browser
(Debian's headless Chromium through its chromedriver; no browser download)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shards import open_dataset
from wikifaces.cli import app
from wikifaces.core.tables import read_jsonl
from wikifaces.fixtures.standin.corpus import HOSTILE_ARTIST, HOSTILE_TITLE
from wikifaces.report import (
    ReportConfig,
    duplicate_clusters,
    funnel,
    kept_samples,
    licences,
    rejected_samples,
    render,
    stage_parameters,
    training_run,
)

CONFIG = ReportConfig(samples=400)


def test_funnel_counts_follow_the_stage_outputs(pipeline_root):
    """Every funnel number against the stage tables and receipts; each row counts one unit, and
    where a row follows the one before, its reasons account for every item lost."""
    root = pipeline_root
    ordered = funnel(root, CONFIG)
    steps = {s["step"]: s for s in ordered}
    receipt = {p.stem: json.loads(p.read_text())["counts"] for p in (root.root / "receipts").glob("*.json")}
    names = list(read_jsonl(root.raw_wikipedia / "names.jsonl"))
    # people: the names stage's own counts
    assert steps["titles collected"]["count"] == receipt["names"]["titles"] >= receipt["names"]["candidates"]
    assert steps["people kept by the filters"]["count"] == len(names) == receipt["names"]["people"]
    merged = steps["people (one page each)"]["reasons"].get("same page as another title", 0)
    assert merged == receipt["names"]["merged"]
    # images: one row per person and candidate file in images.jsonl (a file-less row: no candidate)
    images = list(read_jsonl(root.raw_wikipedia / "images.jsonl"))
    assert steps["people with candidate files"]["reasons"]["no_image"] == sum(r["status"] == "no_image" for r in images)
    assert steps["candidate files (lead, P18, category, depicts)"]["count"] == receipt["images"]["files"] - sum(
        r["status"] == "no_image" for r in images) > steps["people with candidate files"]["count"]
    assert steps["downloaded and valid"]["count"] == receipt["images"]["statuses"]["ok"]
    assert steps["distinct images"]["count"] == len({r["sha256"] for r in images if r["status"] == "ok"})
    # faces: the detect stage's table and counts
    faces = list(read_jsonl(root.faces / "faces.jsonl"))
    assert steps["faces detected"]["count"] == sum(r["rank"] is not None for r in faces)
    assert steps["faces kept (checked, large enough)"]["count"] == receipt["detect"]["faces"]
    usable = {r["source_sha256"] for r in faces if r["status"] == "ok"}
    assert steps["images with a usable face"]["count"] == len(usable)
    # identity: every kept face is the person's own for someone, or turned away with its verdict
    checked = steps["identity-checked (the person's own face)"]
    assert checked["count"] == receipt["identity"]["kept"] == len(open_dataset(root.faces / "checked/shards"))
    assert set(checked["reasons"]) <= {"other_person", "ambiguous_identity"} and checked["reasons"]
    summary = json.loads((root.faces / "checked" / "dedup" / "summary.json").read_text())
    assert steps["kept after dedup"]["count"] == summary["kept"] == receipt["dedup"]["kept"]
    assert steps["kept after dedup"]["reasons"]["duplicate"] == summary["removed"] > 0
    assert steps["published"]["count"] == len(open_dataset(root.processed("faces-64"))) == receipt["publish"]["records"]
    # one unit per row, people and faces in their own sections
    units = {s["step"]: (s["section"], s["unit"]) for s in ordered}
    assert units["titles collected"] == ("people", "titles")
    assert units["people kept by the filters"] == ("people", "people")
    assert units["downloaded and valid"] == ("images", "images")
    assert units["published"] == ("faces", "faces")
    for before, after in itertools.pairwise(ordered):
        if after["lost"] is not None:
            assert before["count"] - after["count"] == sum(after["reasons"].values()), after["step"]
            assert after["lost"] == (round((before["count"] - after["count"]) / before["count"], 4)
                                     if before["count"] else 0.0)
    # faces are another unit than images: no share lost is claimed there
    assert steps["faces detected"]["lost"] is None
    # per person: each step a subset of the one before, ending with the people published
    per_person = [s for s in ordered if s["section"] == "per person"]
    assert [s["step"] for s in per_person] == ["people: all", "people: candidate files", "people: a downloaded image",
                                               "people: a kept face", "people: an identity-checked face",
                                               "people: published"]
    published = {m["person_id"] for m in open_dataset(root.processed("faces-64")).iter_meta()}
    assert per_person[0]["count"] == len(names) and per_person[-1]["count"] == len(published)


def test_licences_and_samples_match_the_published_records(pipeline_root):
    root = pipeline_root
    published = root.processed("faces-64")
    attribution = list(read_jsonl(published / "attribution.jsonl"))
    assert dict(licences(root, CONFIG)) == dict(Counter(a["licence"] for a in attribution))
    kept = kept_samples(root, CONFIG)
    assert len(kept) == len(attribution)  # samples=400 shows them all
    for k in kept:
        assert k["title"] == attribution[k["index"]]["title"] and k["image"].shape == (64, 64, 3)
    rejected = rejected_samples(root, CONFIG)
    assert rejected and all(r["status"] != "ok" and r["reason"] for r in rejected)


def test_duplicate_clusters_show_one_kept_image_each(pipeline_root):
    clusters = duplicate_clusters(pipeline_root, CONFIG)
    assert clusters
    for c in clusters:
        assert sum(m["kept"] for m in c["members"]) == 1
        assert all(m["image"].shape == (64, 64, 3) or m["image"].ndim == 3 for m in c["members"][:8])
        assert max(m["distance"] for m in c["members"]) == c["max_distance"]
    distances = [c["max_distance"] for c in clusters]
    assert distances == sorted(distances, reverse=True)


def test_training_and_parameters_sections(pipeline_root):
    run = training_run(pipeline_root, CONFIG)
    assert run is not None and [r["step"] for r in run["metrics"]][-1] == 3
    assert run["samples"] and all(p.exists() for p in run["samples"])
    assert (run["run"] / "interpolate-seed0.png").exists() and (run["run"] / "memorisation.png").exists()
    # a faces dataset gets the face judge in a build: quality measured at the end, shown in the report
    assert [q["step"] for q in run["quality"]] == [3] and run["summary"]["augment"].startswith("diffaug")
    assert {"face_rate", "face_rate_real", "fd_dlib128"} <= set(run["quality"][0])
    page = render(CONFIG, pipeline_root)
    assert "Sample quality" in page and "not comparable with published" in page and "face rate of real" in page
    receipt = {p["stage"]: p for p in stage_parameters(pipeline_root)}["train-dcgan"]
    assert receipt["counts"]["quality"]["face_rate_real"] == run["quality"][0]["face_rate_real"]
    stages = {p["stage"]: p for p in stage_parameters(pipeline_root)}
    assert set(stages) == {"names", "images", "detect", "identity", "dedup", "publish", "train-dcgan", "report"}
    assert all(p["code_version"] and p["config"] for p in stages.values())


def test_people_section_card_and_manifest_agree(pipeline_root):
    """Images per person and the identity verdicts: the same numbers in the manifest, the card and the report."""
    ds = open_dataset(pipeline_root.processed("faces-64"))
    per_person = Counter(m["person_id"] for m in ds.iter_meta())
    people = ds.manifest.summary["people"]
    assert people["people"] == len(per_person) and people["records"] == len(ds)
    assert people["images_per_person"] == {str(n): k for n, k in sorted(Counter(per_person.values()).items())}
    assert max(per_person.values()) >= 2  # several faces of one person survive to publication
    assert sum(people["identity"].values()) == len(ds) and set(people["identity"]) <= {"verified",
                                                                                         "identity_unchecked"}
    card = (pipeline_root.processed("faces-64") / "README.md").read_text()
    assert f"{len(ds)} images of {len(per_person)} people" in card and "| images per person | people |" in card
    page = render(CONFIG, pipeline_root)
    verdicts = Counter(r["status"] for r in read_jsonl(pipeline_root.faces / "identity.jsonl"))
    assert "id='people'" in page and "people and their faces" in page
    assert f"<td>other_person</td><td class='num'>{verdicts['other_person']}</td>" in page


def test_scraped_text_is_escaped_everywhere(pipeline_root):
    root = pipeline_root
    published = root.processed("faces-64")
    attribution = list(read_jsonl(published / "attribution.jsonl"))
    assert any(a["artist"] == HOSTILE_ARTIST for a in attribution), "the stand-in's hostile artist is published"
    rows = list(read_jsonl(root.raw_wikipedia / "images.jsonl"))
    assert any(r["title"] == HOSTILE_TITLE and r["status"] == "ok" for r in rows)
    page = render(CONFIG, root)
    assert not re.search(r"<script|onerror|javascript:", page, re.I)
    assert "Mallory &lt;script&gt;alert(&#x27;wikifaces&#x27;)&lt;/script&gt; &amp; Sons" in page
    for name in ("README.md", "ATTRIBUTION.md"):
        text = (published / name).read_text()
        assert "<script" not in text.lower() and "<img" not in text.lower()
    assert "Mallory &lt;script&gt;" in (published / "ATTRIBUTION.md").read_text()


def test_cli_report_writes_and_prints_its_path(pipeline_root, tmp_path):
    r = CliRunner().invoke(app, ["report", "--root", str(pipeline_root.root), "--samples", "8"])
    assert r.exit_code == 0, r.output
    path = Path(r.output.strip().splitlines()[-1])
    assert path == (pipeline_root.processed("faces-64") / "report.html").resolve() and path.stat().st_size > 10_000
    r = CliRunner().invoke(app, ["report", "--root", str(pipeline_root.root), "--samples", "999"])
    assert r.exit_code == 2 and "samples" in r.output


def _chrome():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        message = "Debian's chromium and chromium-driver are not installed (make sysdeps installs them as root)"
        if os.environ.get("WIKIFACES_REQUIRE_TESTDATA"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # no network at all: the page must work from the file alone
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_report_in_a_real_browser(pipeline_root, tmp_path):
    from wikifaces.report import build_report

    written = build_report(CONFIG, pipeline_root.root)
    driver = _chrome()
    try:
        driver.get(Path(written.report).resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        assert len(images) > 20
        assert all(ok for _, ok in images), [alt for alt, ok in images if not ok]
        text = driver.execute_script("return document.body.innerText")
        assert HOSTILE_ARTIST in text  # shown as text ...
        assert driver.execute_script("return document.scripts.length") == 0  # ... and nothing runs
        for section in ("Funnel", "Licences", "Kept images", "Rejected detections", "Duplicate clusters",
                        "Training", "Stages: parameters and code version"):
            assert section in text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    finally:
        driver.quit()
