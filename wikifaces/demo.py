"""`wikifaces demo`: everything that exists, end to end, on offline defaults."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shards import ShardWriter, open_dataset, verify_dataset
from shards.sheet import contact_sheet, write_png
from wikifaces.paths import DataRoot
from wikifaces.samples import random_crops

DEMO_CONTACT = "wikifaces demo (offline stand-in)"


def run_demo(root: str | Path | None, console: Console) -> Path:
    from scraping.config import HttpConfig, ImagesConfig, NamesConfig
    from scraping.images import fetch_images
    from scraping.names import collect_names
    from scraping.standin import StandinServer, build_corpus

    data = DataRoot.resolve(root)
    with StandinServer(build_corpus(60)) as server:
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

    out = data.processed("demo-crops")
    console.rule("shards")
    with ShardWriter(out, name="demo-crops", image_size=(64, 64), encoding="png", max_records=100,
                     mode="overwrite", parameters={"size": 64, "per_photo": 24, "seed": 0}) as writer:
        licences: Counter[str] = Counter()
        for image, meta in random_crops(size=64, per_photo=24, seed=0):
            writer.add(image, meta)
            licences[meta["licence"]] += 1
        writer.summary["licences"] = dict(licences)
    report = verify_dataset(out, decode=True)
    if not report.ok:
        raise SystemExit(f"demo dataset failed verification: {report.damaged}")
    ds = open_dataset(out)
    sheet = out.parent / "demo-crops-contact.png"
    write_png(sheet, contact_sheet([ds[i].image for i in range(0, len(ds), max(1, len(ds) // 64))]))
    console.print(f"dataset: {out} ({len(ds)} records in {len(ds.manifest.shards)} shards, verified)")
    console.print(f"contact sheet: {sheet}")
    return out
