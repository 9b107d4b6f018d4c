"""Tools: datasets (verify, inspect, export), trained runs (generate, interpolate, arithmetic,
memorisation) and the fixtures (the offline stand-in, an LSUN sample)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import BadOption, app, console


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.json).")],
    decode: Annotated[bool, typer.Option("--decode", help="Also decode every record.")] = False,
) -> None:
    """Check every shard against the manifest's sizes and sha256; name any damaged shard."""
    from shards import verify_dataset

    report = verify_dataset(path, decode=decode)
    table = Table("shard", "status", "problems")
    for check in report.shards:
        table.add_row(check.file, "[green]ok[/]" if check.ok else "[red]DAMAGED[/]", "; ".join(check.problems))
    console.print(table)
    if report.ok:
        extra = f", {report.decoded} records decoded" if decode else ""
        console.print(f"[green]ok[/]: {report.name}: {report.count} records in {len(report.shards)} shards{extra}")
    else:
        from shards import ShardError

        raise ShardError(f"damaged shards in {path}: {', '.join(report.damaged)}")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.json).")],
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Images on the contact sheet.")] = 64,
    out: Annotated[Path | None, typer.Option(help="Contact sheet PNG (default: ./<name>-contact.png).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for choosing the samples.")] = 0,
) -> None:
    """Print the manifest summary and write a PNG contact sheet of random samples."""
    from shards import open_dataset
    from shards.sheet import contact_sheet, write_png

    ds = open_dataset(path)
    m = ds.manifest
    size = f"{m.image.height}x{m.image.width}" if m.image.height else "mixed sizes"
    blocks = f", blocks of {m.image.block}" if m.image.block > 1 else ""
    table = Table(show_header=False)
    for key, value in [
        ("name", m.name), ("records", f"{m.count:,}"), ("images", f"{size}, {m.image.encoding}{blocks}"),
        ("shards", f"{len(m.shards)} ({sum(s.bytes for s in m.shards) / 2**20:,.1f} MiB)"),
        ("format", f"{m.format} v{m.format_version}"), ("code", m.provenance.code_version),
        ("created", m.provenance.created),
        *[(f"summary.{k}", str(v)) for k, v in m.summary.items()],
    ]:
        table.add_row(key, value)
    console.print(table)
    if len(ds):
        picks = sorted(random.Random(seed).sample(range(len(ds)), min(samples, len(ds))))
        sheet = contact_sheet([ds[i].image for i in picks])
        out = out or Path(f"{m.name}-contact.png")
        write_png(out, sheet)
        console.print(f"contact sheet: {out}")


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.json).")],
    out: Annotated[Path, typer.Argument(help="Empty or new output folder.")],
    to: Annotated[str, typer.Option("--to", help="folder, webdataset, parquet (Hugging Face datasets) or "
                                    "identity-folders (<person_id>/<n>.<ext>)")] = "folder",
    records_per_tar: Annotated[int, typer.Option(min=1, help="Records per WebDataset tar or Parquet file.")] = 10_000,
) -> None:
    """Export a dataset to an image folder (+ metadata.jsonl), WebDataset tar shards, Parquet, or
    one folder per person."""
    from shards import export_dataset

    if to not in ("folder", "webdataset", "parquet", "identity-folders"):
        raise BadOption(f"--to must be 'folder', 'webdataset', 'parquet' or 'identity-folders', not {to!r}")
    n = export_dataset(path, out, to=to, records_per_tar=records_per_tar)  # type: ignore[arg-type]
    console.print(f"exported {n} records to {out} ({to})")


@app.command("lsun-sample")
def lsun_sample(
    out: Annotated[Path, typer.Argument(help="Folder to create: an LSUN-format LMDB.")],
    n: Annotated[int, typer.Option(min=1, help="Images.")] = 500,
    size: Annotated[int, typer.Option(min=16, help="Shorter side of each image.")] = 256,
    fmt: Annotated[str, typer.Option("--format", help="webp or jpeg")] = "webp",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a small LSUN-format LMDB from real photographs (with planted near-duplicates)."""
    from wikifaces.fixtures.lsun import write_lsun_lmdb

    if fmt not in ("webp", "jpeg"):
        raise BadOption("--format must be webp or jpeg")
    planted = write_lsun_lmdb(out, n, size, fmt, seed)
    console.print(f"wrote {n} images ({len(planted)} planted near-duplicates) to {out}")


RunArgument = Annotated[Path, typer.Argument(help="A run directory (or a checkpoint file).")]
OutOption = Annotated[Path | None, typer.Option(help="Output PNG (default: in the run directory).")]


@app.command()
def generate(run: RunArgument, n: Annotated[int, typer.Option(min=1, max=1024)] = 64,
             seed: Annotated[int, typer.Option()] = 0, out: OutOption = None) -> None:
    """Samples from a trained generator, numbered (for `arithmetic`)."""
    from training import generate_grid

    target = out or Path(run) / f"generate-seed{seed}.png"
    generate_grid(run, target, n, seed)
    console.print(f"samples: {target}")


@app.command()
def interpolate(run: RunArgument, rows: Annotated[int, typer.Option(min=1, max=32)] = 8,
                steps: Annotated[int, typer.Option(min=2, max=32)] = 10, seed: Annotated[int, typer.Option()] = 0,
                out: OutOption = None) -> None:
    """Walks through the latent space between random points (the paper's Figure 4)."""
    from training import interpolate as walk

    target = out or Path(run) / f"interpolate-seed{seed}.png"
    walk(run, target, rows, steps, seed)
    console.print(f"interpolation grid: {target}")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadOption(f"expected comma-separated sample numbers, got {text!r}") from None


@app.command()
def arithmetic(run: RunArgument,
               a: Annotated[str, typer.Option(help="Sample numbers for group A, e.g. 3,17,40.")],
               b: Annotated[str, typer.Option(help="Group B (subtracted).")],
               c: Annotated[str, typer.Option(help="Group C (added).")],
               seed: Annotated[int, typer.Option(help="The seed of the `generate` grid the numbers refer to.")] = 0,
               out: OutOption = None) -> None:
    """mean z(A) - mean z(B) + mean z(C), rendered (the paper's Figure 7)."""
    from training import arithmetic as combine

    target = out or Path(run) / f"arithmetic-seed{seed}.png"
    try:
        combine(run, target, _ints(a), _ints(b), _ints(c), seed)
    except ValueError as exc:
        raise BadOption(str(exc)) from None
    console.print(f"vector arithmetic: {target} (top: means of A, B, C and the result; below: its neighbourhood)")


@app.command()
def memorisation(run: RunArgument, dataset: Annotated[Path, typer.Argument(help="The training dataset.")],
                 n: Annotated[int, typer.Option(min=1, max=256)] = 16, seed: Annotated[int, typer.Option()] = 0,
                 out: OutOption = None) -> None:
    """The nearest training images to generated samples, with distances: is it copying?"""
    from training import memorisation as check

    target = out or Path(run) / "memorisation.png"
    distances = check(run, dataset, target, n, seed)
    nearest = sorted(d[0] for d in distances)
    console.print(f"nearest-neighbour distance per pixel (0-255): min {nearest[0]:.1f}, median "
                  f"{nearest[len(nearest) // 2]:.1f}; picture: {target}")


@app.command()
def standin(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    people: Annotated[int, typer.Option(min=12, help="People in the stand-in's world.")] = 60,
    dump: Annotated[Path | None, typer.Option(
        help="Also write the stand-in's Wikidata as a JSON dump here (.json.gz or .json.bz2).")] = None,
) -> None:
    """Run the offline Wikipedia stand-in until interrupted (for trying the stages by hand)."""
    import time

    from wikifaces.fixtures.standin import StandinServer, build_corpus

    with StandinServer(build_corpus(people), port=port) as server:
        console.print(f"stand-in Wikipedia at {server.url} (Ctrl-C to stop); try:")
        console.print(f"  wikifaces names --standin {server.url} --category 'Stand-in people' --depth 2")
        console.print(f"  wikifaces names --standin {server.url} --source wikidata-sparql --born-after 1900 "
                      "--has-image")
        if dump is not None:
            server.write_dump(dump)
            console.print(f"  wikifaces names --standin {server.url} --source wikidata-dump {dump}")
        console.print(f"  wikifaces images --standin {server.url}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
