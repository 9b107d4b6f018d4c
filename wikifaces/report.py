"""Stage `report`: one self-contained HTML page per build, for a curator who would rather look
than read logs.

Sections: the funnel (counts per stage, the share lost at each step, rejection reasons), the
licences, random kept faces and rejected detections with their reasons, duplicate clusters
with distances, the training run (losses, D outputs, samples over time, a latent walk, the
memorisation check), and the parameters and code version of every stage. Pictures are embedded
as data URIs, there is no script at all, and every string from the data is escaped, so the page
works opened as a file, offline, and nothing in a title or licence field can run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shards import is_complete, open_dataset
from wikifaces.core.files import atomic_write_text
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import read_jsonl
from wikifaces.core.version import code_version


class ReportConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(default="faces-64", pattern=r"^[A-Za-z0-9_.-]+$")
    source: Literal["faces", "lsun"] = "faces"
    category: str = Field(default="bedroom", pattern=r"^[A-Za-z0-9_.-]+$")
    samples: Annotated[int, Field(ge=0, le=400)] = 64
    rejected: Annotated[int, Field(ge=0, le=400)] = 24
    clusters: Annotated[int, Field(ge=0, le=100)] = 12
    seed: int = 0


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def png_uri(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a picture for the report")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def file_uri(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def figure_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# -- the data behind each section (plain values: tested on their own) -----------------------------------
def funnel(root: DataRoot, config: ReportConfig) -> list[dict[str, Any]]:
    """The build's funnel, one row per step, each counting one unit (titles, people, images or
    faces) in its section. Where a row follows from the row before (`lost` is set), its reasons
    account for every item lost: `before - count == sum(reasons)`. A row that starts a new unit
    (faces from images) claims no share lost."""
    steps: list[dict[str, Any]] = []

    def add(section: str, label: str, unit: str, count: int, reasons: dict[str, int] | None = None,
            follows: bool = True) -> None:
        prev = steps[-1]["count"] if steps and follows else None
        lost = (round((prev - count) / prev, 4) if prev else 0.0) if prev is not None else None
        kept_reasons = {k: v for k, v in Counter(reasons or {}).most_common() if v}
        steps.append({"section": section, "step": label, "unit": unit, "count": count, "lost": lost,
                      "reasons": kept_reasons})

    tables = _faces_tables(root) if config.source == "faces" else {}
    if config.source == "faces":
        _people_rows(tables, add)
        _face_rows(tables, add)
    else:
        ds = root.lsun(config.category) / "shards"
        n = len(open_dataset(ds)) if is_complete(ds) else 0
        bad = Counter(r["status"] for r in read_jsonl(root.lsun(config.category) / "import-rejected.jsonl"))
        add("images", "images imported", "images", n, bad, follows=False)
    section, unit = ("faces", "faces") if config.source == "faces" else ("images", "images")
    summary = _dedup_summary(root, config)
    if summary:
        add(section, "kept after dedup", unit, summary["kept"],
            {"duplicate": summary["removed"], "unreadable": summary["corrupt"]})
    published = root.processed(config.dataset)
    if is_complete(published):
        m = open_dataset(published).manifest
        add(section, "published", unit, m.count, m.summary.get("skipped", {}))
    if config.source == "faces":
        _per_person_rows(root, config, tables, add)
    return steps


def _faces_tables(root: DataRoot) -> dict[str, Any]:
    """The faces build's tables, each read once for the whole funnel (identity: None before that stage)."""
    raw = root.raw_wikipedia
    return {"names": list(read_jsonl(raw / "names.jsonl")), "rejected": list(read_jsonl(raw / "names-rejected.jsonl")),
            "images": list(read_jsonl(raw / "images.jsonl")), "faces": list(read_jsonl(root.faces / "faces.jsonl")),
            "identity": _identity_rows(root)}


def _people_rows(tables: dict[str, Any], add: Any) -> None:
    """titles -> people -> people kept -> people with candidate files; files -> free -> valid -> distinct."""
    names, rejected = tables["names"], tables["rejected"]
    by_title = [r for r in rejected if "inputs" not in r]  # the title named no usable page
    by_person = [r for r in rejected if "inputs" in r]  # a page, left out by a filter
    merged = sum(len(p.get("inputs") or [p]) - 1 for p in names + by_person)
    titles = len(by_title) + sum(len(p.get("inputs") or [p]) for p in names + by_person)
    add("people", "titles collected", "titles", titles, follows=False)
    add("people", "people (one page each)", "people", len(names) + len(by_person),
        {**Counter(r["status"] for r in by_title), "same page as another title": merged})
    add("people", "people kept by the filters", "people", len(names), Counter(r["status"] for r in by_person))
    images = tables["images"]
    listed = {r["person_id"] for r in images}
    with_files = {r["person_id"] for r in images if r.get("file")}
    add("people", "people with candidate files", "people", len(with_files),
        {"no_image": len(listed - with_files), "beyond the images limit": len(names) - len(listed)})
    files = [r for r in images if r.get("file")]
    statuses = Counter(r["status"] for r in files)
    add("images", "candidate files (lead, P18, category, depicts)", "files", len(files), follows=False)
    taken = ("nonfree", "taken_down")
    add("images", "free licence, not taken down", "files", len(files) - sum(statuses[k] for k in taken),
        {k: statuses[k] for k in taken})
    add("images", "downloaded and valid", "images", statuses["ok"],
        {k: v for k, v in statuses.items() if k not in ("ok", *taken)})
    distinct = {r["sha256"] for r in files if r["status"] == "ok"}
    add("images", "distinct images", "images", len(distinct),
        {"the same image as another person's or file's": statuses["ok"] - len(distinct)})


def _face_rows(tables: dict[str, Any], add: Any) -> None:
    """distinct images -> images with a usable face; faces detected -> faces kept -> identity-checked."""
    faces = tables["faces"]
    image_status = {r["source_sha256"]: r.get("image_status") for r in faces}
    usable = {r["source_sha256"] for r in faces if r["status"] == "ok"}
    distinct = {r["sha256"] for r in tables["images"] if r["status"] == "ok"}
    reasons = Counter(status for sha, status in image_status.items() if sha not in usable)
    reasons["beyond the detect limit"] = len(distinct - set(image_status))
    add("images", "images with a usable face", "images", len(usable), reasons)
    detections = [r for r in faces if r.get("rank") is not None]
    add("faces", "faces detected", "faces", len(detections), follows=False)
    kept = [r for r in detections if r["status"] == "ok"]
    add("faces", "faces kept (checked, large enough)", "faces", len(kept),
        Counter(r["status"] for r in detections if r["status"] != "ok"))
    checked = tables["identity"]
    if checked is None:
        return
    best: dict[str, str] = {}  # face -> its best verdict for anyone
    for r in checked:
        if r["key"] not in best or IDENTITY_ORDER.index(r["status"]) < IDENTITY_ORDER.index(best[r["key"]]):
            best[r["key"]] = r["status"]
    kept_for = {k for k, status in best.items() if status in ("verified", "identity_unchecked")}
    turned = Counter(status for k, status in best.items() if k not in kept_for)
    add("faces", "identity-checked (the person's own face)", "faces", len(kept_for), turned)


IDENTITY_ORDER = ("verified", "identity_unchecked", "other_person", "ambiguous_identity")


def _identity_rows(root: DataRoot) -> list[dict[str, Any]] | None:
    path = root.faces / "identity.jsonl"
    return list(read_jsonl(path)) if path.exists() else None


def _per_person_rows(root: DataRoot, config: ReportConfig, tables: dict[str, Any], add: Any) -> None:
    """The same build counted in people: who is left at each step (a person counts while one of
    their files, images or faces is)."""
    names, images = tables["names"], tables["images"]
    steps: list[tuple[str, set[str], str]] = [
        ("people: all", {p["person_id"] for p in names}, ""),
        ("people: candidate files", {r["person_id"] for r in images if r.get("file")}, "no candidate file"),
        ("people: a downloaded image", {r["person_id"] for r in images if r["status"] == "ok"}, "no file passed"),
    ]
    steps.append(("people: a kept face", {p for r in tables["faces"] if r["status"] == "ok"
                                       for p in r.get("person_ids") or [r["person_id"]]}, "no usable face"))
    checked = tables["identity"]
    if checked is not None:
        steps.append(("people: an identity-checked face", {r["person_id"] for r in checked
                                                        if r["status"] in ("verified", "identity_unchecked")},
                      "every face another person's or ambiguous"))
    published = root.processed(config.dataset)
    if is_complete(published):
        ds = open_dataset(published)
        steps.append(("people: published", {m["person_id"] for m in ds.iter_meta()},
                      "every face a duplicate or skipped"))
    before: set[str] | None = None
    for label, people, why in steps:
        people = people if before is None else people & before
        add("per person", label, "people", len(people), {why: len(before) - len(people)} if before else None,
            follows=before is not None)
        before = people


def people(root: DataRoot, config: ReportConfig) -> dict[str, Any] | None:
    """Published images per person (a histogram) and the identity check's verdicts on every face."""
    published = root.processed(config.dataset)
    if config.source != "faces" or not is_complete(published):
        return None
    summary = open_dataset(published).manifest.summary.get("people")
    checked = _identity_rows(root) or []
    return {"published": summary, "verdicts": dict(Counter(r["status"] for r in checked)),
            "sheet": root.faces / "identity-people.png"}


def _dedup_summary(root: DataRoot, config: ReportConfig) -> dict[str, Any] | None:
    base = root.candidates(config.source, config.category)
    path = base / "dedup" / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def licences(root: DataRoot, config: ReportConfig) -> list[tuple[str, int]]:
    published = root.processed(config.dataset)
    if not is_complete(published):
        return []
    counts = open_dataset(published).manifest.summary.get("licences", {})
    return sorted(counts.items(), key=lambda kv: -kv[1])


def kept_samples(root: DataRoot, config: ReportConfig) -> list[dict[str, Any]]:
    """Published images at random, each with who it shows, its author and licence."""
    published = root.processed(config.dataset)
    if not is_complete(published) or config.samples == 0:
        return []
    ds = open_dataset(published)
    picks = sorted(random.Random(config.seed).sample(range(len(ds)), min(config.samples, len(ds))))
    out = []
    for i in picks:
        image, meta = ds[i]
        out.append({"index": i, "image": image, "title": meta.get("title"), "artist": meta.get("artist"),
                    "licence": meta.get("licence")})
    return out


def rejected_samples(root: DataRoot, config: ReportConfig) -> list[dict[str, Any]]:
    """A sample of rejected detections: each with its crop (RGB) and its status and reason."""
    path = root.faces / "rejected"
    if config.source != "faces" or not is_complete(path) or config.rejected == 0:
        return []
    ds = open_dataset(path)
    picks = sorted(random.Random(config.seed).sample(range(len(ds)), min(config.rejected, len(ds))))
    out = []
    for i in picks:
        image, meta = ds[i]
        out.append({"image": image, "status": meta.get("status"), "reason": meta.get("reason"),
                    "title": meta.get("title")})
    return out


def duplicate_clusters(root: DataRoot, config: ReportConfig) -> list[dict[str, Any]]:
    """The clusters with the largest distances (where mistakes would be), members with images."""
    base = root.candidates(config.source, config.category)
    clusters = list(read_jsonl(base / "dedup" / "clusters.jsonl"))
    if not clusters or not is_complete(base / "shards"):
        return []
    ds = open_dataset(base / "shards")
    chosen = sorted(clusters, key=lambda c: (-c["max_distance"], c["cluster"]))[: config.clusters]
    for c in chosen:
        for m in c["members"][:8]:
            m["image"] = ds[m["index"]].image
    return chosen


def training_run(root: DataRoot, config: ReportConfig) -> dict[str, Any] | None:
    marker = root.runs / f"latest-{config.dataset}.txt"
    if not marker.exists():
        return None
    run = Path(marker.read_text().strip())
    if not (run / "metrics.jsonl").exists():
        return None
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss_d" in r]
    warnings = [r["warning"] for r in read_jsonl(run / "metrics.jsonl") if "warning" in r]
    samples = sorted((run / "samples").glob("step-*.png"))
    quality = [r["quality"] for r in read_jsonl(run / "metrics.jsonl") if "quality" in r]
    return {"run": run, "metrics": rows, "warnings": warnings, "samples": samples, "quality": quality,
            "summary": json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}}


def stage_parameters(root: DataRoot) -> list[dict[str, Any]]:
    """Every stage's receipt (`receipts/<stage>.json`, written by the pipeline's runner), read as data."""
    keys = ("stage", "code_version", "finished", "config_hash", "config", "counts")
    out = []
    for path in sorted((root.root / "receipts").glob("*.json")):
        try:
            receipt = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a damaged receipt only means its stage reruns
        if isinstance(receipt, dict) and all(k in receipt for k in keys):
            out.append({k: receipt[k] for k in keys})
    return out


# -- rendering -----------------------------------------------------------------------------------------------
def _funnel_chart(steps: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"titles": "#9ab7d3", "people": "#4a7fb5", "files": "#8cc49a", "images": "#5a9e6f",
               "faces": "#c07b3a"}
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(steps) + 0.8))
    labels = [f"{s['step']} ({s['unit']})" for s in steps][::-1]
    ax.barh(labels, [s["count"] for s in steps][::-1], color=[colours.get(s["unit"], "#888") for s in steps][::-1])
    for y, s in enumerate(steps[::-1]):
        ax.text(s["count"], y, f"  {s['count']} {s['unit']}", va="center", fontsize=9)
    ax.set_xlabel("count (each bar in its own unit)")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_uri(fig)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}.num{text-align:right}.muted{color:#777}img{max-width:100%}
.tiles{display:flex;flex-wrap:wrap;gap:8px}.tile{width:120px;font-size:11px}.tile img{width:120px}
.cluster{display:flex;gap:6px;margin:6px 0;align-items:flex-start}.cluster figure{margin:0;font-size:11px;
text-align:center}.kept img{outline:3px solid #2a2}.dropped img{outline:3px solid #c33}pre{background:#f7f7f7;
padding:.6em;overflow-x:auto;font-size:12px}.warn{color:#a60}"""


def _tile(image: np.ndarray, alt: str, caption: str, muted: str) -> str:
    """An image with a caption and a muted line below (both already escaped)."""
    return (f"<div class='tile'><img alt='{esc(alt)}' src='{png_uri(image)}'><div>{caption}</div>"
            f"<div class='muted'>{muted}</div></div>")


def render(config: ReportConfig, root: DataRoot) -> str:
    """The whole page: each section from the stages' outputs, every string escaped, pictures inline."""
    title = f"wikifaces build report: {esc(config.dataset)}"
    parts = [f"<h1>{title}</h1><p class='muted'>wikifaces {esc(code_version())}</p>"]
    for section in (_funnel_section, _people_section, _licence_section, _image_sections, _training_section,
                    _parameter_section):
        parts.extend(section(config, root))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
            f"style-src 'unsafe-inline'\"><title>{title}</title><style>{CSS}</style></head><body>{body}</body></html>")


def _funnel_section(config: ReportConfig, root: DataRoot) -> list[str]:
    """The funnel as a table, in sections and units, and as a chart."""
    parts: list[str] = []
    steps = funnel(root, config)
    parts.append("<h2 id='funnel'>Funnel</h2><table><tr><th>step</th><th class='num'>count</th><th>unit</th>"
                 "<th class='num'>lost from the step before</th><th>why</th></tr>")
    section = None
    for s in steps:
        if s["section"] != section:
            section = s["section"]
            parts.append(f"<tr><th colspan='5'>{esc(section)}</th></tr>")
        reasons = ", ".join(f"{esc(k)}: {v}" for k, v in s["reasons"].items() if v) or "&nbsp;"
        parts.append(f"<tr><td>{esc(s['step'])}</td><td class='num'>{s['count']}</td><td>{esc(s['unit'])}</td>"
                     f"<td class='num'>{'—' if s['lost'] is None else format(s['lost'], '.1%')}</td>"
                     f"<td>{reasons}</td></tr>")
    parts.append("</table>")
    if steps:
        parts.append(f"<img alt='funnel chart' src='{_funnel_chart(steps)}'>")

    return parts


def _people_section(config: ReportConfig, root: DataRoot) -> list[str]:
    """Images per person, the identity verdicts, and a few people with all their faces."""
    info = people(root, config)
    if info is None or not info["published"]:
        return []
    pub = info["published"]
    hist = pub["images_per_person"]
    top = max(hist.values(), default=1)
    parts = [f"<h2 id='people'>People</h2><p>{pub['records']} published images of {pub['people']} people.</p>",
             "<table><tr><th class='num'>images per person</th><th class='num'>people</th><th></th></tr>"]
    parts.extend(f"<tr><td class='num'>{esc(n)}</td><td class='num'>{k}</td><td><div style='background:#4a7fb5;"
                 f"height:10px;width:{max(2, round(300 * k / top))}px'></div></td></tr>" for n, k in hist.items())
    parts.append("</table>")
    if info["verdicts"]:
        parts.append("<h3>Identity check</h3><p>Every kept face against its person's reference face (dlib "
                     "descriptors), one verdict per person and face:</p><table><tr><th>verdict</th>"
                     "<th class='num'>faces</th></tr>")
        parts.extend(f"<tr><td>{esc(k)}</td><td class='num'>{v}</td></tr>"
                     for k, v in sorted(info["verdicts"].items(), key=lambda kv: IDENTITY_ORDER.index(kv[0])))
        parts.append("</table>")
    uri = file_uri(info["sheet"])
    if uri:
        parts.append("<p>The people with the most faces, one line each: green verified, red another person, "
                     f"orange ambiguous, grey unchecked.</p><img alt='people and their faces' src='{uri}'>")
    return parts


def _licence_section(config: ReportConfig, root: DataRoot) -> list[str]:
    """Published images per licence, and where every image's attribution is."""
    parts: list[str] = []
    lic = licences(root, config)
    if lic:
        parts.append("<h2 id='licences'>Licences</h2><table><tr><th>licence</th><th class='num'>images</th></tr>")
        parts.extend(f"<tr><td>{esc(k)}</td><td class='num'>{v}</td></tr>" for k, v in lic)
        parts.append("</table><p>Every image's author, licence and source: <a href='ATTRIBUTION.md'>ATTRIBUTION.md</a>"
                     " (and <a href='attribution.jsonl'>attribution.jsonl</a>).</p>")

    return parts


def _image_sections(config: ReportConfig, root: DataRoot) -> list[str]:
    """Kept images, rejected detections and duplicate clusters, as pictures with captions."""
    parts: list[str] = []
    kept = kept_samples(root, config)
    if kept:
        parts.append(f"<h2 id='kept'>Kept images</h2><p>{len(kept)} at random, with subject, author and "
                     "licence.</p><div class='tiles'>")
        parts.extend(_tile(r["image"], f"published image {r['index']}", f"<b>{esc(r['title'])}</b>",
                           f"{esc(r['artist'])}, {esc(r['licence'])}") for r in kept)
        parts.append("</div>")
    rejected = rejected_samples(root, config)
    if rejected:
        parts.append("<h2 id='rejected'>Rejected detections</h2><div class='tiles'>")
        parts.extend(_tile(r["image"], "rejected detection", f"<b>{esc(r['status'])}</b>: {esc(r['reason'])}",
                           esc(r["title"])) for r in rejected)
        parts.append("</div>")
    clusters = duplicate_clusters(root, config)
    if clusters:
        parts.append("<h2 id='duplicates'>Duplicate clusters</h2><p>Largest distances first: a green frame is the "
                     "image kept, red ones were removed; d is the Hamming distance of the hashes.</p>")
        for c in clusters:
            parts.append("<div class='cluster'>")
            for m in c["members"][:8]:
                cls = "kept" if m["kept"] else "dropped"
                label = "kept" if m["kept"] else f"d = {m['distance']}" + (
                    f", {m['agreement']:.0%} agree" if m.get("agreement") is not None else "")
                parts.append(f"<figure class='{cls}'><img width='96' alt='{esc(m['key'])}' src='{png_uri(m['image'])}'>"
                             f"<figcaption>{esc(label)}</figcaption></figure>")
            parts.append("</div>")

    return parts


def _training_section(config: ReportConfig, root: DataRoot) -> list[str]:
    """The latest training run: losses, samples over time, latent walk, memorisation."""
    parts: list[str] = []
    run = training_run(root, config)
    if run is not None:
        parts.append(f"<h2 id='training'>Training</h2><p>Run <code>{esc(run['run'].name)}</code>: "
                     f"{esc(run['summary'].get('steps'))} steps, {esc(run['summary'].get('images_per_second'))} "
                     f"images/s; augmentation: {esc(run['summary'].get('augment', 'none'))}.</p>")
        parts.extend(f"<p class='warn'>warning: {esc(w)}</p>" for w in run["warnings"])
        parts.extend(_quality_table(run["quality"], run["summary"].get("quality") or {}))
        loss = file_uri(run["run"] / "loss.png")
        if loss:
            parts.append(f"<img alt='losses and discriminator outputs' src='{loss}'>")
        shown = run["samples"][:: max(1, len(run["samples"]) // 4)][-4:] if run["samples"] else []
        for p in shown:
            uri = file_uri(p)
            if uri:
                parts.append(f"<h3>Fixed-noise samples, {esc(p.stem.replace('step-', 'step '))}</h3>"
                             f"<img alt='samples' src='{uri}'>")
        for name, label in (("interpolate-seed0.png", "Latent walk"), ("memorisation.png", "Memorisation check: "
                                                                        "samples and their nearest training images")):
            uri = file_uri(run["run"] / name)
            if uri:
                parts.append(f"<h3>{esc(label)}</h3><img alt='{esc(label)}' src='{uri}'>")

    return parts


QUALITY_COLUMNS = (("face_rate", "face rate"), ("face_rate_real", "face rate of real images"),
                   ("fd_dlib128", "Fréchet distance (dlib descriptors)"), ("precision_dlib128", "precision"),
                   ("recall_dlib128", "recall"))


def _quality_table(measured: list[dict[str, Any]], last: dict[str, Any]) -> list[str]:
    """Sample quality over the run (training.quality): one row per measurement."""
    if not measured:
        note = last.get("not_measured")
        return [f"<p>Sample quality not measured: {esc(note)}</p>"] if note else []
    cols = [(k, label) for k, label in QUALITY_COLUMNS if k in measured[-1]]
    rows = "".join("<tr><td>" + esc(q.get("step")) + "</td>" + "".join(f"<td>{esc(q.get(k))}</td>" for k, _ in cols)
                   + "</tr>" for q in measured)
    last = measured[-1]
    return [f"<h3>Sample quality</h3><p>{esc(last.get('samples'))} samples against {esc(last.get('real_images'))} "
            f"training images, in the space of {esc(last.get('space'))}. These are not FIDs: the Fréchet distance "
            "is taken between face descriptors, not Inception features, and is not comparable with published "
            "figures.</p><table><tr><th>step</th>" + "".join(f"<th>{esc(label)}</th>" for _, label in cols)
            + f"</tr>{rows}</table>"]


def _parameter_section(config: ReportConfig, root: DataRoot) -> list[str]:
    """Every stage's parameters and code version, from its receipt."""
    parts: list[str] = []
    params = stage_parameters(root)
    if params:
        parts.append("<h2 id='parameters'>Stages: parameters and code version</h2><table>"
                     "<tr><th>stage</th><th>code</th><th>finished</th><th>parameters</th></tr>")
        for p in params:
            parts.append(f"<tr><td>{esc(p['stage'])}</td><td>{esc(p['code_version'])}</td><td>{esc(p['finished'])}"
                         f"</td><td><pre>{esc(json.dumps(p['config'], indent=1, sort_keys=True))}</pre></td></tr>")
        parts.append("</table>")
    return parts


@dataclass
class ReportSummary:
    report: Path
    bytes: int

    @property
    def counts(self) -> dict[str, Any]:
        return {"report": str(self.report), "bytes": self.bytes}


def build_report(config: ReportConfig, root: str | os.PathLike[str] | DataRoot | None = None) -> ReportSummary:
    """Write `processed/<dataset>/report.html`: one self-contained page from the stages' outputs."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    out_dir = data.processed(config.dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = render(config, data)
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return ReportSummary(path, len(page.encode()))
