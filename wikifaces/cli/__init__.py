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


# -- scraping ----------------------------------------------------------------------------------------
ContactOption = Annotated[str | None, typer.Option(
    "--contact", envvar="WIKIFACES_CONTACT",
    help="How Wikimedia can reach you (e-mail or URL); required for the real sites.")]
StandinOption = Annotated[str | None, typer.Option(
    "--standin", help="Base URL of a running stand-in (`wikifaces standin`): use it for every endpoint.")]
ApiOption = Annotated[str | None, typer.Option("--api-url", help="MediaWiki Action API endpoint.")]
AttemptsOption = Annotated[int, typer.Option(min=1, max=20, help="Attempts per request before giving up.")]
RefreshOption = Annotated[bool, typer.Option(
    "--refresh-cache", help="Ask the API again and overwrite its cached answers (for a cache holding something bad).")]
BeyondOption = Annotated[bool, typer.Option(
    "--beyond-policy", help="Allow more than Wikimedia's robot policy: only with Wikimedia's permission.")]


def _http_config(contact: str | None, standin: str | None, api_url: str | None, max_attempts: int = 6,
                 refresh_cache: bool = False, beyond_policy: bool = False):
    from urllib.parse import urlsplit

    from scraping.config import HttpConfig

    kwargs: dict = {"contact": contact, "max_attempts": max_attempts, "refresh_cache": refresh_cache,
                    "beyond_policy": beyond_policy}
    if standin:
        base = standin.rstrip("/")
        kwargs.update(api_url=f"{base}/w/api.php", commons_api_url=f"{base}/commons/w/api.php",
                      wikidata_api_url=f"{base}/wikidata/w/api.php",
                      allowed_download_hosts=(urlsplit(base).netloc,))
    if api_url:
        kwargs["api_url"] = api_url
    return HttpConfig(**kwargs)


def _config_or_exit(factory):
    from pydantic import ValidationError

    try:
        return factory()
    except ValidationError as exc:
        _fail("invalid options:\n" + "\n".join(
            f"  {'.'.join(str(x) for x in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()), 2)


@app.command()
def names(
    category: Annotated[list[str] | None, typer.Option("--category", "-c", help="A category (repeatable).")] = None,
    depth: Annotated[int, typer.Option(min=0, max=10, help="Recurse into subcategories this deep.")] = 0,
    list_page: Annotated[list[str] | None, typer.Option("--list-page", "-l", help="A 'List of ...' article.")] = None,
    names_file: Annotated[Path | None, typer.Option(help="A file of names, one a line.")] = None,
    born_after: Annotated[int | None, typer.Option(help="Keep people born in this year or later (Wikidata).")] = None,
    humans_only: Annotated[bool | None, typer.Option(help="Only Wikidata humans (default: with list pages).")] = None,
    lead_images: Annotated[str, typer.Option(help="Lead images to record: free or any.")] = "free",
    limit: Annotated[int | None, typer.Option(min=1, help="Keep at most this many people.")] = None,
    contact: ContactOption = None, standin: StandinOption = None, api_url: ApiOption = None,
    max_attempts: AttemptsOption = 6, refresh_cache: RefreshOption = False, root: RootOption = None,
) -> None:
    """Stage `names`: collect people from categories, list pages and names files."""
    from scraping.config import NamesConfig
    from scraping.http import HttpError
    from scraping.names import collect_names

    config = _config_or_exit(lambda: NamesConfig(
        categories=tuple(category or ()), category_depth=depth, list_pages=tuple(list_page or ()),
        names_file=names_file, born_after=born_after, humans_only=humans_only, lead_images=lead_images,
        limit=limit, http=_http_config(contact, standin, api_url, max_attempts, refresh_cache)))
    try:
        summary = collect_names(config, root)
    except (ValueError, HttpError) as exc:
        _fail(str(exc))
    console.print(f"names: {summary.people} people from {summary.candidates} candidates "
                  f"({summary.api_requests} API requests, {summary.api_cache_hits} from cache); "
                  f"rejected {summary.rejected or 'none'}")
    console.print(f"written: {summary.output}")


@app.command()
def images(
    thumb_width: Annotated[str, typer.Option(
        help="A Wikimedia thumbnail step (20 ... 960, 1280, 1920, 3840) or original.")] = "960",
    allow_nonfree: Annotated[bool, typer.Option(help="Also download non-free files.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Retry people whose download failed before.")] = False,
    min_side: Annotated[int, typer.Option(min=1, help="Smallest acceptable image side, in pixels.")] = 64,
    takedown_file: Annotated[Path | None, typer.Option(help="File names, QIDs or sha256s never to keep.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N people.")] = None,
    contact: ContactOption = None, standin: StandinOption = None, api_url: ApiOption = None,
    max_attempts: AttemptsOption = 6, refresh_cache: RefreshOption = False, beyond_policy: BeyondOption = False,
    root: RootOption = None,
) -> None:
    """Stage `images`: fetch each person's lead image with its licence, politely, resumably."""
    from scraping.config import ImagesConfig
    from scraping.http import HttpError
    from scraping.images import fetch_images

    width = thumb_width if thumb_width == "original" else int(thumb_width) if thumb_width.isdigit() else thumb_width
    config = _config_or_exit(lambda: ImagesConfig(
        thumb_width=width, allow_nonfree=allow_nonfree, retry_failed=retry_failed, min_side=min_side,
        takedown_file=takedown_file, limit=limit,
        http=_http_config(contact, standin, api_url, max_attempts, refresh_cache, beyond_policy)))
    try:
        summary = fetch_images(config, root)
    except (ValueError, FileNotFoundError, HttpError) as exc:
        _fail(str(exc))
    table = Table("status", "people")
    for status, n in sorted(summary.statuses.items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(n))
    console.print(table)
    console.print(f"written: {summary.output}")


@app.command()
def detect(
    min_face: Annotated[int, typer.Option(min=8, help="Smallest face kept, in source pixels.")] = 64,
    size: Annotated[int, typer.Option(min=16, max=1024, help="Side of the square crops.")] = 128,
    margin: Annotated[float, typer.Option(min=0, max=2, help="Added on each side, as a share of the box.")] = 0.25,
    border: Annotated[str, typer.Option(help="clip or reflect")] = "reflect",
    resize_filter: Annotated[str, typer.Option(help="area, lanczos, cubic or linear")] = "area",
    verify: Annotated[str, typer.Option(help="none, eyes, alt2 or mtcnn")] = "mtcnn",
    verify_threshold: Annotated[float, typer.Option(min=0, max=1)] = 0.9,
    align_eyes: Annotated[bool, typer.Option(help="Rotate crops so the eyes are level.")] = False,
    single_face_only: Annotated[bool, typer.Option(help="Keep only images with one face.")] = False,
    detector: Annotated[str, typer.Option(help="haar, or yunet with --yunet-model")] = "haar",
    yunet_model: Annotated[Path | None, typer.Option(help="A YuNet .onnx file (never downloaded).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: all cores).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N images.")] = None,
    root: RootOption = None,
) -> None:
    """Stage `detect`: find, check and crop faces in the downloaded portraits."""
    from faces import DetectConfig, detect_faces

    config = _config_or_exit(lambda: DetectConfig(
        min_face=min_face, size=size, margin=margin, border=border, resize_filter=resize_filter, verify=verify,
        verify_threshold=verify_threshold, align_eyes=align_eyes, single_face_only=single_face_only,
        detector=detector, yunet_model=yunet_model, workers=workers, limit=limit))
    try:
        summary = detect_faces(config, root)
    except FileNotFoundError as exc:
        _fail(str(exc))
    table = Table("status", "rows")
    for status, n in sorted(summary.statuses.items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(n))
    console.print(table)
    console.print(f"{summary.faces} faces from {summary.images} images; written: {summary.output}")


@app.command("lsun-import")
def lsun_import(
    source: Annotated[Path, typer.Argument(help="LSUN LMDB directory (e.g. bedroom_train_lmdb) or image folder.")],
    category: Annotated[str, typer.Option(help="Category name, for the output folder.")] = "bedroom",
    size: Annotated[int, typer.Option(min=0, help="Shorter side to this, then centre crop; 0 keeps sizes.")] = 64,
    encoding: Annotated[str, typer.Option(help="jpeg, png or webp")] = "jpeg",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N images.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: all cores).")] = None,
    root: RootOption = None,
) -> None:
    """Stage `lsun-import`: an LSUN category into shards, streamed, resumable."""
    from dedup import LsunImportConfig, import_lsun

    config = _config_or_exit(lambda: LsunImportConfig(source=source, category=category, size=size or None,
                                                      encoding=encoding, limit=limit, workers=workers))
    try:
        summary = import_lsun(config, root)
    except FileNotFoundError as exc:
        _fail(str(exc))
    console.print(f"imported {summary.imported} images ({summary.counts.get('rejected', 0)} rejected) "
                  f"into {summary.output}")


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
        _fail("--format must be webp or jpeg", 2)
    planted = write_lsun_lmdb(out, n, size, fmt, seed)
    console.print(f"wrote {n} images ({len(planted)} planted near-duplicates) to {out}")


@app.command()
def dedup(
    dataset: Annotated[Path | None, typer.Argument(help="A shard dataset (default: the face candidates).")] = None,
    method: Annotated[str, typer.Option(help="phash, dhash, whash, ahash or ae")] = "phash",
    threshold: Annotated[int | None, typer.Option(min=0, max=64, help="Hamming distance (default: chosen).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: beside the dataset).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes for hashing.")] = None,
    root: RootOption = None,
) -> None:
    """Stage `dedup`: exact and near-duplicate groups, one record kept from each."""
    from dedup import DedupConfig, find_duplicates
    from shards import ShardError
    from wikifaces.core.paths import DataRoot

    extra = {} if threshold is None else {"threshold": threshold}
    config = _config_or_exit(lambda: DedupConfig(method=method, workers=workers, **extra))
    target = dataset or DataRoot.resolve(root).faces / "shards"
    try:
        s = find_duplicates(config, target, out)
    except ShardError as exc:
        _fail(str(exc))
    console.print(f"{s.records} records: {s.removed} duplicates removed in {s.clusters} groups, {s.kept} kept, "
                  f"{s.corrupt} unreadable ({config.method}, threshold {config.threshold})")
    console.print(f"written: {s.out_dir} (keep.npy, clusters.jsonl, removed.jsonl, gallery.png)")


# -- training ------------------------------------------------------------------------------------------
def _init_distributed() -> bool:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


@app.command()
def train(
    dataset: Annotated[Path, typer.Argument(help="A shard dataset (folder with manifest.json).")],
    image_size: Annotated[int, typer.Option(help="32, 64 or 128.")] = 64,
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    g_width: Annotated[int, typer.Option(help="G channels at 4x4 (the paper: 1024).")] = 1024,
    d_width: Annotated[int, typer.Option(help="D channels at 4x4 (the paper: 1024).")] = 1024,
    kernel: Annotated[int, typer.Option(help="4 (pytorch/examples) or 5 (the authors' code).")] = 4,
    lr: Annotated[float, typer.Option(min=0)] = 2e-4,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    compile: Annotated[bool, typer.Option(help="torch.compile the models.")] = False,
    sample_every: Annotated[int, typer.Option(min=1)] = 500,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 1000,
    resume: Annotated[Path | None, typer.Option(help="A run directory to continue exactly.")] = None,
    root: RootOption = None,
) -> None:
    """Stage `train-dcgan`: DCGAN on a shard dataset (GPU when there is one; DDP under torchrun)."""
    from training import TrainConfig, train_dcgan

    config = _config_or_exit(lambda: TrainConfig(
        dataset=dataset, image_size=image_size, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        g_width=g_width, d_width=d_width, kernel=kernel, lr=lr, seed=seed, device=device, compile=compile,
        sample_every=sample_every, checkpoint_every=checkpoint_every))
    distributed = _init_distributed()
    try:
        summary = train_dcgan(config, root, resume=resume)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    console.print(f"{summary.steps} steps ({summary.epochs_done:.2f} epochs), "
                  f"{summary.images_per_second:.0f} images/s; run: {summary.run_dir}")
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/] {w}")


RunArgument = Annotated[Path, typer.Argument(help="A run directory (or a checkpoint file).")]
OutOption = Annotated[Path | None, typer.Option(help="Output PNG (default: in the run directory).")]


@app.command()
def generate(run: RunArgument, n: Annotated[int, typer.Option(min=1, max=1024)] = 64,
             seed: Annotated[int, typer.Option()] = 0, out: OutOption = None) -> None:
    """Samples from a trained generator, numbered (for `arithmetic`)."""
    from training.tools import generate_grid

    target = out or Path(run) / f"generate-seed{seed}.png"
    generate_grid(run, target, n, seed)
    console.print(f"samples: {target}")


@app.command()
def interpolate(run: RunArgument, rows: Annotated[int, typer.Option(min=1, max=32)] = 8,
                steps: Annotated[int, typer.Option(min=2, max=32)] = 10, seed: Annotated[int, typer.Option()] = 0,
                out: OutOption = None) -> None:
    """Walks through the latent space between random points (the paper's Figure 4)."""
    from training.tools import interpolate as walk

    target = out or Path(run) / f"interpolate-seed{seed}.png"
    walk(run, target, rows, steps, seed)
    console.print(f"interpolation grid: {target}")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"expected comma-separated sample numbers, got {text!r}", 2)
        return []


@app.command()
def arithmetic(run: RunArgument,
               a: Annotated[str, typer.Option(help="Sample numbers for group A, e.g. 3,17,40.")],
               b: Annotated[str, typer.Option(help="Group B (subtracted).")],
               c: Annotated[str, typer.Option(help="Group C (added).")],
               seed: Annotated[int, typer.Option(help="The seed of the `generate` grid the numbers refer to.")] = 0,
               out: OutOption = None) -> None:
    """mean z(A) - mean z(B) + mean z(C), rendered (the paper's Figure 7)."""
    from training.tools import arithmetic as combine

    target = out or Path(run) / f"arithmetic-seed{seed}.png"
    try:
        combine(run, target, _ints(a), _ints(b), _ints(c), seed)
    except ValueError as exc:
        _fail(str(exc), 2)
    console.print(f"vector arithmetic: {target} (top: means of A, B, C and the result; below: its neighbourhood)")


@app.command()
def memorisation(run: RunArgument, dataset: Annotated[Path, typer.Argument(help="The training dataset.")],
                 n: Annotated[int, typer.Option(min=1, max=256)] = 16, seed: Annotated[int, typer.Option()] = 0,
                 out: OutOption = None) -> None:
    """The nearest training images to generated samples, with distances: is it copying?"""
    from training.tools import memorisation as check

    target = out or Path(run) / "memorisation.png"
    distances = check(run, dataset, target, n, seed)
    nearest = sorted(d[0] for d in distances)
    console.print(f"nearest-neighbour distance per pixel (0-255): min {nearest[0]:.1f}, median "
                  f"{nearest[len(nearest) // 2]:.1f}; picture: {target}")


DatasetOption = Annotated[str, typer.Option(help="The published dataset (processed/<name>).")]
SourceOption = Annotated[str, typer.Option(help="faces or lsun.")]
CategoryOption = Annotated[str, typer.Option(help="LSUN category, for --source lsun.")]


@app.command()
def publish(
    root: RootOption = None,
    dataset: DatasetOption = "faces-64",
    source: SourceOption = "faces",
    category: CategoryOption = "bedroom",
    size: Annotated[int, typer.Option(min=8, max=1024, help="Published image size.")] = 64,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Publish every candidate.")] = False,
) -> None:
    """Publish candidates minus duplicates as processed/<dataset>: shards, manifest, card, attribution."""
    from wikifaces.pipeline import run_stage
    from wikifaces.publish import PublishConfig

    config = _config_or_exit(lambda: PublishConfig(dataset=dataset, source=source, category=category, size=size,
                                                   use_dedup=not no_dedup))
    from shards import ShardError

    try:
        r = run_stage("publish", config, root)
    except (OSError, ShardError) as e:
        _fail(str(e))
    console.print(f"publish: {'skipped, ' + r.reason if r.skipped else 'done'}; {r.counts.get('records')} records "
                  f"in {r.outputs and next(iter(r.outputs))}")


@app.command()
def report(
    root: RootOption = None,
    dataset: DatasetOption = "faces-64",
    source: SourceOption = "faces",
    category: CategoryOption = "bedroom",
    samples: Annotated[int, typer.Option(min=0, max=400, help="Kept images shown.")] = 64,
    open_: Annotated[bool, typer.Option("--open", help="Open it in the default browser.")] = False,
) -> None:
    """Write the build's self-contained HTML report (processed/<dataset>/report.html) and print its path."""
    from wikifaces.report import ReportConfig, build_report

    config = _config_or_exit(lambda: ReportConfig(dataset=dataset, source=source, category=category,
                                                  samples=samples))
    written = build_report(config, root)
    path = Path(written["report"]).resolve()
    console.print(str(path))
    if open_:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            err.print("no browser could be started here: open the path above yourself")


@app.command()
def standin(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    people: Annotated[int, typer.Option(min=12, help="People in the stand-in's world.")] = 60,
) -> None:
    """Run the offline Wikipedia stand-in until interrupted (for trying the stages by hand)."""
    import time

    from wikifaces.fixtures.standin import StandinServer, build_corpus

    with StandinServer(build_corpus(people), port=port) as server:
        console.print(f"stand-in Wikipedia at {server.url} (Ctrl-C to stop); try:")
        console.print(f"  wikifaces names --standin {server.url} --category 'Stand-in people' --depth 2")
        console.print(f"  wikifaces images --standin {server.url}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


server_app = typer.Typer(help="A local Prefect server on SQLite, in the background (home: <root>/prefect).",
                          no_args_is_help=True)
app.add_typer(server_app, name="server")


def _prefect_home(root: Path | None) -> Path:
    from wikifaces.core.paths import DataRoot

    return (DataRoot.resolve(root).root / "prefect").resolve()


@server_app.command("start")
def server_start(root: RootOption = None,
                 port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default 4200 if free).")] = None
                 ) -> None:
    """Start the server (or find the running one) and print the variable that points Prefect at it."""
    from flows.server import start_server, ui_url

    try:
        api = start_server(_prefect_home(root), port)
    except RuntimeError as e:
        _fail(str(e))
    console.print(f"Prefect server: UI {ui_url(api)}; in every shell that talks to it:")
    console.print(f"  export PREFECT_API_URL={api}")


@server_app.command("stop")
def server_stop(root: RootOption = None) -> None:
    """Stop the server that `server start` (or the demo) started for this data root."""
    from flows.server import stop_server

    console.print("stopped" if stop_server(_prefect_home(root)) else "no server was running for this data root")


def _connect(root: Path | None) -> None:
    from flows.demo import connect
    from wikifaces.core.paths import DataRoot

    try:
        api = connect(DataRoot.resolve(root), console=err)
    except RuntimeError as e:
        _fail(str(e))
    err.print(f"Prefect API: {api}")


@app.command()
def serve(
    root: RootOption = None,
    only: Annotated[list[str] | None, typer.Option(help="Serve only these flows (repeatable), e.g. train-dcgan.")]
    = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many runs at once.")] = None,
) -> None:
    """Serve deployments of every flow from this process until interrupted (`<flow>/default`, and
    `build-faces/demo` on the offline stand-in). Uses PREFECT_API_URL, else the local server."""
    _connect(root)
    from flows.deploy import serve_all

    serve_all(only, limit)


@app.command()
def build(
    root: RootOption = None,
    lsun: Annotated[Path | None, typer.Option(help="Build LSUN from this LMDB release or image folder "
                                                   "(build-lsun) instead of faces.")] = None,
    params: Annotated[str | None, typer.Option("--params", "-p", help="Flow parameters as JSON, as `prefect "
                                                                     "deployment run --params` takes them.")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Run from this stage on.")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only this stage (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Rerun the chosen stages even when unchanged.")] = False,
    standin: Annotated[bool, typer.Option(help="Scrape the offline stand-in instead of Wikipedia.")] = False,
    dask_address: Annotated[str | None, typer.Option(help="Send fan-out work to this Dask scheduler "
                                                          "(tcp://host:8786).")] = None,
) -> None:
    """Run build-faces (or build-lsun) in this process, reported to Prefect."""
    import json

    from pydantic import ValidationError

    try:
        extra = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        _fail(f"--params is not JSON: {e}")
    _connect(root)
    from flows.build import ParameterTypeError, build_faces, build_lsun
    from wikifaces.core.lock import RootLocked

    common = {"root": str(root) if root else None, "from_stage": from_stage, "only": only, "force": force,
              "dask_address": dask_address}
    try:
        if lsun is not None:
            extra.setdefault("lsun", {})["source"] = str(lsun)
            results = build_lsun(**{**common, **extra})
        else:
            results = build_faces(**{**common, "standin": standin, **extra})
    except (ParameterTypeError, ValidationError, ValueError, TypeError) as e:
        _fail(str(e), 2)
    except RootLocked as e:
        _fail(str(e), 3)
    table = Table("stage", "what happened")
    for r in results:
        table.add_row(r["stage"], f"skipped: {r['reason']}" if r.get("skipped") else "ran")
    console.print(table)


@app.command()
def demo(
    root: RootOption = None,
    port: Annotated[int | None, typer.Option(help="Port for the local Prefect server.")] = None,
) -> None:
    """build-faces end to end on the offline defaults (local Prefect server, stand-in Wikipedia,
    short CPU training); says where the dataset, report and Prefect UI are."""
    from flows.demo import run_demo

    try:
        run_demo(root, console, port)
    except RuntimeError as e:  # the server would not start, or another build holds the data root
        _fail(str(e))


if __name__ == "__main__":  # pragma: no cover
    app()
