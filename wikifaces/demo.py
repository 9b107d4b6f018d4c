"""`wikifaces demo`: everything that exists, end to end, on offline defaults."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from shards import open_dataset, verify_dataset
from shards.sheet import contact_sheet, write_png
from wikifaces.paths import DataRoot

DEMO_CONTACT = "wikifaces demo (offline stand-in)"


def run_demo(root: str | Path | None, console: Console) -> Path:
    from scraping.config import HttpConfig, ImagesConfig, NamesConfig
    from scraping.images import fetch_images
    from scraping.names import collect_names
    from scraping.standin import StandinServer, build_corpus

    data = DataRoot.resolve(root)
    with StandinServer(build_corpus(80, all_photos=True)) as server:
        http = HttpConfig(**server.endpoints(), contact=DEMO_CONTACT)
        console.rule(f"names and images from the offline Wikipedia stand-in at {server.url}")
        names = collect_names(NamesConfig(categories=("Stand-in people",), category_depth=2, http=http), data.root)
        console.print(f"names: {names.people} people ({names.api_requests} API requests)")
        images = fetch_images(ImagesConfig(http=http), data.root)
        table = Table("image status", "people")
        for status, n in sorted(images.statuses.items(), key=lambda kv: -kv[1]):
            table.add_row(status, str(n))
        console.print(table)
        console.print(f"rows: {images.output}")

    from faces import DetectConfig, detect_faces

    console.rule("faces")
    faces = detect_faces(DetectConfig(), data.root)
    table = Table("face row status", "rows")
    for status, n in sorted(faces.statuses.items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(n))
    console.print(table)
    crops = data.faces / "shards"
    report = verify_dataset(crops, decode=True)
    if not report.ok:
        raise SystemExit(f"face shards failed verification: {report.damaged}")
    ds = open_dataset(crops)
    sheet = data.faces / "faces-contact.png"
    write_png(sheet, contact_sheet([ds[i].image for i in range(0, len(ds), max(1, len(ds) // 64))]))
    console.print(f"faces: {faces.faces} crops from {faces.images} images in {crops} (verified); table {faces.output}")
    console.print(f"contact sheet: {sheet}")

    from dedup import DedupConfig, find_duplicates

    console.rule("dedup")
    d = find_duplicates(DedupConfig(), crops)
    console.print(f"dedup: {d.removed} near-duplicate faces removed in {d.clusters} groups, {d.kept} kept "
                  f"(phash, threshold {DedupConfig().threshold}); gallery {d.out_dir / 'gallery.png'}")
    return crops
