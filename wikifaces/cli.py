"""The `wikifaces` command line."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Build face and LSUN datasets from Wikipedia and LMDB releases, and train DCGAN on them.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True)

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="Data root (default: $WIKIFACES_ROOT or ./data).", show_default=False),
]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.json).")],
    decode: Annotated[bool, typer.Option("--decode", help="Also decode every record.")] = False,
) -> None:
    """Check every shard against the manifest's sizes and sha256; name any damaged shard."""
    from shards import ShardError, verify_dataset

    try:
        report = verify_dataset(path, decode=decode)
    except ShardError as exc:
        _fail(str(exc))
    table = Table("shard", "status", "problems")
    for check in report.shards:
        table.add_row(check.file, "[green]ok[/]" if check.ok else "[red]DAMAGED[/]", "; ".join(check.problems))
    console.print(table)
    if report.ok:
        extra = f", {report.decoded} records decoded" if decode else ""
        console.print(f"[green]ok[/]: {report.name}: {report.count} records in {len(report.shards)} shards{extra}")
    else:
        _fail(f"damaged shards in {path}: {', '.join(report.damaged)}")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.json).")],
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Images on the contact sheet.")] = 64,
    out: Annotated[Path | None, typer.Option(help="Contact sheet PNG (default: ./<name>-contact.png).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for choosing the samples.")] = 0,
) -> None:
    """Print the manifest summary and write a PNG contact sheet of random samples."""
    from shards import ShardError, open_dataset
    from shards.sheet import contact_sheet, write_png

    try:
        ds = open_dataset(path)
    except ShardError as exc:
        _fail(str(exc))
    m = ds.manifest
    size = f"{m.image.height}x{m.image.width}" if m.image.height else "mixed sizes"
    table = Table(show_header=False)
    for key, value in [
        ("name", m.name), ("records", f"{m.count:,}"), ("images", f"{size}, {m.image.encoding}"),
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
    to: Annotated[str, typer.Option("--to", help="folder or webdataset")] = "folder",
    records_per_tar: Annotated[int, typer.Option(min=1, help="Records per WebDataset tar.")] = 10_000,
) -> None:
    """Export a dataset to an image folder (+ metadata.jsonl) or WebDataset tar shards."""
    from shards import ShardError, export_dataset

    if to not in ("folder", "webdataset"):
        _fail(f"--to must be 'folder' or 'webdataset', not {to!r}", 2)
    try:
        n = export_dataset(path, out, to=to, records_per_tar=records_per_tar)  # type: ignore[arg-type]
    except ShardError as exc:
        _fail(str(exc))
    console.print(f"exported {n} records to {out} ({to})")


@app.command()
def demo(root: RootOption = None) -> None:
    """Run the pipeline end to end on the offline defaults and say where the results are."""
    from wikifaces.demo import run_demo

    run_demo(root, console)


if __name__ == "__main__":  # pragma: no cover
    app()
