"""The stage commands: each builds its stage's config (defaults from the config itself) and runs it
through the pipeline's runner, so a rerun with nothing changed is skipped, as in a flow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dedup.config import DedupConfig, DedupStageConfig, LsunImportConfig
from faces.config import DetectConfig, IdentityConfig
from scraping.config import HttpConfig, ImagesConfig, NamesConfig
from training.config import TrainConfig
from wikifaces.publish import PublishConfig
from wikifaces.report import ReportConfig

from .common import BadOption, ForceOption, RootOption, app, console, default, err


def run(name: str, config: Any, root: Path | None, force: bool = False) -> Any:
    """Run a stage through the one runner; say when it was skipped, and where its outputs are."""
    from wikifaces.core.paths import DataRoot
    from wikifaces.pipeline import STAGES, run_stage

    result = run_stage(name, config, root, force=force)
    if result.skipped:
        console.print(f"{name}: skipped, {result.reason} (--force reruns it)")
    outputs = STAGES[name].outputs(config, DataRoot.resolve(root))
    console.print("outputs: " + ", ".join(str(p) for p in outputs.values()))
    return result


def _counts_table(title: str, statuses: dict[str, int]) -> None:
    table = Table(title, "count")
    for status, n in sorted(statuses.items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(n))
    console.print(table)


# -- scraping -----------------------------------------------------------------------------------------------
ContactOption = Annotated[str | None, typer.Option(
    "--contact", envvar="WIKIFACES_CONTACT",
    help="How Wikimedia can reach you (e-mail or URL); required for the real sites.")]
StandinOption = Annotated[str | None, typer.Option(
    "--standin", help="Base URL of a running stand-in (`wikifaces standin`): use it for every endpoint.")]
ApiOption = Annotated[str | None, typer.Option("--api-url", help="MediaWiki Action API endpoint.")]
AttemptsOption = Annotated[int, typer.Option(min=1, max=20, help="Attempts per request before giving up.")]
RefreshOption = Annotated[bool, typer.Option(
    "--refresh-cache", help="Ask the API again and overwrite its cached answers (when the cache holds something bad).")]
BeyondOption = Annotated[bool, typer.Option(
    "--beyond-policy", help="Allow more than Wikimedia's robot policy: only with Wikimedia's permission.")]


def http_config(contact: str | None, standin: str | None, api_url: str | None, max_attempts: int,
                refresh_cache: bool = False, beyond_policy: bool = False) -> HttpConfig:
    from urllib.parse import urlsplit

    kwargs: dict = {"contact": contact, "max_attempts": max_attempts, "refresh_cache": refresh_cache,
                    "beyond_policy": beyond_policy}
    if standin:
        base = standin.rstrip("/")
        kwargs.update(api_url=f"{base}/w/api.php", commons_api_url=f"{base}/commons/w/api.php",
                      wikidata_api_url=f"{base}/wikidata/w/api.php", sparql_url=f"{base}/sparql",
                      allowed_download_hosts=(urlsplit(base).netloc,))
    if api_url:
        kwargs["api_url"] = api_url
    return HttpConfig(**kwargs)


@app.command()
def names(
    dump: Annotated[Path | None, typer.Argument(
        help="The Wikidata JSON dump (latest-all.json.gz or .bz2), for --source wikidata-dump.")] = None,
    source: Annotated[str, typer.Option(
        help="wikipedia (categories, list pages, names files), wikidata-sparql (the Query Service) or "
             "wikidata-dump (a dump file).")] = default(NamesConfig, "source"),
    category: Annotated[list[str] | None, typer.Option("--category", "-c", help="A category (repeatable).")] = None,
    depth: Annotated[int, typer.Option(min=0, max=10, help="Recurse into subcategories this deep.")]
    = default(NamesConfig, "category_depth"),
    list_page: Annotated[list[str] | None, typer.Option("--list-page", "-l", help="A 'List of ...' article.")] = None,
    names_file: Annotated[Path | None, typer.Option(help="A file of names, one a line.")] = None,
    born_after: Annotated[int | None, typer.Option(help="Keep people born in this year or later (Wikidata).")]
    = default(NamesConfig, "born_after"),
    humans_only: Annotated[bool | None, typer.Option(help="Only Wikidata humans (default: with list pages).")]
    = default(NamesConfig, "humans_only"),
    has_image: Annotated[bool, typer.Option("--has-image", help="Wikidata sources: only people with an image (P18).")]
    = False,
    has_commons_category: Annotated[bool, typer.Option(
        "--has-commons-category", help="Wikidata sources: only people with a Commons category (P373).")] = False,
    has_article: Annotated[str | None, typer.Option(
        help="Wikidata sources: only people with an article in this language (e.g. en).")] = None,
    occupation: Annotated[list[str] | None, typer.Option(
        "--occupation", help="Wikidata sources: an occupation (P106) QID, e.g. Q82594 (repeatable: any of).")] = None,
    citizenship: Annotated[list[str] | None, typer.Option(
        "--citizenship", help="Wikidata sources: a country of citizenship (P27) QID (repeatable: any of).")] = None,
    resolve_pages: Annotated[bool, typer.Option(
        help="Wikidata sources: look up each article's page id (and lead image where Wikidata has none).")]
    = default(NamesConfig, "resolve_pages"),
    lead_images: Annotated[str, typer.Option(help="Lead images to record: free or any.")]
    = default(NamesConfig, "lead_images"),
    limit: Annotated[int | None, typer.Option(min=1, help="Keep at most this many people.")]
    = default(NamesConfig, "limit"),
    contact: ContactOption = None, standin: StandinOption = None, api_url: ApiOption = None,
    max_attempts: AttemptsOption = default(HttpConfig, "max_attempts"), refresh_cache: RefreshOption = False,
    force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `names`: people from categories, list pages and names files, or every human on Wikidata
    with an image, a Commons category or an article (the Query Service, or a dump)."""
    config = NamesConfig(
        source=source, categories=tuple(category or ()), category_depth=depth, list_pages=tuple(list_page or ()),
        names_file=names_file, born_after=born_after, humans_only=humans_only, lead_images=lead_images,
        dump_file=dump, has_image=has_image, has_commons_category=has_commons_category, has_article=has_article,
        occupations=tuple(occupation or ()), citizenships=tuple(citizenship or ()), resolve_pages=resolve_pages,
        limit=limit, http=http_config(contact, standin, api_url, max_attempts, refresh_cache))
    r = run("names", config, root, force)
    c = r.counts
    console.print(f"names: {c['people']} people from {c['candidates']} candidates ({c['api_requests']} API "
                  f"requests, {c['api_cache_hits']} from cache); rejected {c['rejected'] or 'none'}")
    for warning in c.get("warnings", []):
        err.print(f"[yellow]warning:[/] {warning}")


@app.command()
def images(
    thumb_width: Annotated[str, typer.Option(
        help="A Wikimedia thumbnail step (20 ... 960, 1280, 1920, 3840) or original.")]
    = str(default(ImagesConfig, "thumb_width")),
    allow_nonfree: Annotated[bool, typer.Option(help="Also download non-free files.")]
    = default(ImagesConfig, "allow_nonfree"),
    retry_failed: Annotated[bool, typer.Option(help="Retry people whose download failed before.")]
    = default(ImagesConfig, "retry_failed"),
    min_side: Annotated[int, typer.Option(min=1, help="Smallest acceptable image side, in pixels.")]
    = default(ImagesConfig, "min_side"),
    takedown_file: Annotated[Path | None, typer.Option(help="File names, QIDs or sha256s never to keep.")] = None,
    max_images_per_person: Annotated[int, typer.Option(
        min=1, max=500, help="Candidate files per person (1: the lead image only).")]
    = default(ImagesConfig, "max_images_per_person"),
    route: Annotated[list[str] | None, typer.Option(
        help="Where candidates come from (repeat): lead, p18, category, depicts. Default: all.")] = None,
    category_depth: Annotated[int, typer.Option(min=0, max=5, help="Commons subcategories to follow.")]
    = default(ImagesConfig, "category_depth"),
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N people.")] = default(ImagesConfig, "limit"),
    contact: ContactOption = None, standin: StandinOption = None, api_url: ApiOption = None,
    max_attempts: AttemptsOption = default(HttpConfig, "max_attempts"), refresh_cache: RefreshOption = False,
    beyond_policy: BeyondOption = False, force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `images`: fetch each person's candidate portraits (lead image, Wikidata image, Commons
    category, depicts) with their licences, politely, resumably."""
    width: Any = int(thumb_width) if thumb_width.isdigit() else thumb_width
    config = ImagesConfig(
        thumb_width=width, allow_nonfree=allow_nonfree, retry_failed=retry_failed, min_side=min_side,
        takedown_file=takedown_file, limit=limit, max_images_per_person=max_images_per_person,
        category_depth=category_depth, **({"routes": tuple(route)} if route else {}),
        http=http_config(contact, standin, api_url, max_attempts, refresh_cache, beyond_policy))
    r = run("images", config, root, force)
    _counts_table("status", r.counts["statuses"])


# -- faces ------------------------------------------------------------------------------------------------------
@app.command()
def detect(
    min_face: Annotated[int, typer.Option(min=8, help="Smallest face kept, in source pixels.")]
    = default(DetectConfig, "min_face"),
    size: Annotated[int, typer.Option(min=16, max=1024, help="Side of the square crops.")]
    = default(DetectConfig, "size"),
    margin: Annotated[float, typer.Option(min=0, max=2, help="Added on each side, as a share of the box.")]
    = default(DetectConfig, "margin"),
    border: Annotated[str, typer.Option(help="clip or reflect")] = default(DetectConfig, "border"),
    resize_filter: Annotated[str, typer.Option(help="area, lanczos, cubic or linear")]
    = default(DetectConfig, "resize_filter"),
    verify: Annotated[str, typer.Option(help="none, eyes, alt2 or mtcnn")] = default(DetectConfig, "verify"),
    verify_threshold: Annotated[float, typer.Option(min=0, max=1)] = default(DetectConfig, "verify_threshold"),
    align: Annotated[str, typer.Option(help="none (the detector's box), eyes (level the Haar eyes) or landmarks "
                                       "(FFHQ's square from O-Net's five landmarks)")]
    = default(DetectConfig, "align"),
    single_face_only: Annotated[bool, typer.Option(help="Keep only images with one face.")]
    = default(DetectConfig, "single_face_only"),
    detector: Annotated[str, typer.Option(help="haar, or yunet with --yunet-model")]
    = default(DetectConfig, "detector"),
    yunet_model: Annotated[Path | None, typer.Option(help="A YuNet .onnx file (never downloaded).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: all cores).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N images.")] = default(DetectConfig, "limit"),
    force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `detect`: find, check and crop faces in the downloaded portraits."""
    config = DetectConfig(
        min_face=min_face, size=size, margin=margin, border=border, resize_filter=resize_filter, verify=verify,
        verify_threshold=verify_threshold, align=align, single_face_only=single_face_only,
        detector=detector, yunet_model=yunet_model, workers=workers, limit=limit)
    r = run("detect", config, root, force)
    _counts_table("status", r.counts["statuses"])
    console.print(f"{r.counts['faces']} faces from {r.counts['images']} images")


@app.command()
def identity(
    threshold: Annotated[float, typer.Option(min=0.01, max=2, help="Descriptor distance to the person's reference "
                                             "beyond which a face is another person's.")]
    = default(IdentityConfig, "threshold"),
    group_distance: Annotated[float, typer.Option(min=0.01, max=2, help="Faces this close form a group (used when "
                                                  "no lead image holds exactly one face).")]
    = default(IdentityConfig, "group_distance"),
    keep_unchecked: Annotated[bool, typer.Option(help="Keep people with a single face (flagged unchecked).")]
    = default(IdentityConfig, "keep_unchecked"),
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: all cores).")] = None,
    force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `identity`: describe every kept face (dlib's 128-d descriptor) and check that it is the
    person it is filed under."""
    config = IdentityConfig(threshold=threshold, group_distance=group_distance, keep_unchecked=keep_unchecked,
                            workers=workers)
    r = run("identity", config, root, force)
    _counts_table("status", r.counts["statuses"])
    console.print(f"{r.counts['kept']} faces kept of {r.counts['faces']}, {r.counts['people_verified']} people "
                  "with verified faces")


# -- LSUN and dedup ---------------------------------------------------------------------------------------------
@app.command("lsun-import")
def lsun_import(
    source: Annotated[Path, typer.Argument(help="LSUN LMDB directory (e.g. bedroom_train_lmdb) or image folder.")],
    category: Annotated[str, typer.Option(help="Category name, for the output folder.")]
    = default(LsunImportConfig, "category"),
    size: Annotated[int, typer.Option(min=0, help="Shorter side to this, then centre crop; 0 keeps sizes.")]
    = default(LsunImportConfig, "size"),
    encoding: Annotated[str, typer.Option(help="jpeg, png or webp")] = default(LsunImportConfig, "encoding"),
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N images.")]
    = default(LsunImportConfig, "limit"),
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: all cores).")] = None,
    force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `lsun-import`: an LSUN category into shards, streamed, resumable."""
    config = LsunImportConfig(source=source, category=category, size=size or None, encoding=encoding, limit=limit,
                              workers=workers)
    r = run("lsun-import", config, root, force)
    console.print(f"imported {r.counts['imported']} images ({r.counts.get('rejected', 0)} rejected)")


@app.command()
def dedup(
    dataset: Annotated[Path | None, typer.Argument(help="A shard dataset (default: the face candidates).")] = None,
    method: Annotated[str, typer.Option(help="phash, dhash, whash, ahash or ae")] = default(DedupConfig, "method"),
    threshold: Annotated[int, typer.Option(min=0, max=64, help="Hamming distance, with --no-verify.")]
    = default(DedupConfig, "threshold"),
    verify: Annotated[bool, typer.Option(help="Check every candidate pair on its pixels.")]
    = default(DedupConfig, "verify"),
    candidate_threshold: Annotated[int, typer.Option(min=0, max=64, help="Hamming distance of the pairs checked.")]
    = default(DedupConfig, "candidate_threshold"),
    probe_threshold: Annotated[int, typer.Option(min=-1, max=64, help="Hamming distance of a re-framed copy's "
                                                 "hash (crops, borders, captions) for a pair to be checked; -1: off.")]
    = default(DedupConfig, "probe_threshold"),
    min_agreement: Annotated[float, typer.Option(min=0, max=1, help="Share of tiles that must agree.")]
    = default(DedupConfig, "min_agreement"),
    workers: Annotated[int | None, typer.Option(min=1, help="Processes for hashing.")] = None,
    force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `dedup`: exact and near-duplicate groups, one record kept from each."""
    d = DedupConfig(method=method, threshold=threshold, verify=verify, candidate_threshold=candidate_threshold,
                    probe_threshold=None if probe_threshold < 0 else probe_threshold,
                    min_agreement=min_agreement, workers=workers)
    config = DedupStageConfig(dataset=dataset, dedup=d)
    c = run("dedup", config, root, force).counts
    framed = "" if d.probe_threshold is None else f" (re-framed within {d.probe_threshold})"
    how = (f"candidates within {d.candidate_threshold}{framed}, {c['verified_links']} of {c['verified_pairs']} "
           f"verified, {c['already_joined_pairs']} more already joined"
           if d.verify else f"threshold {d.threshold}")
    console.print(f"{c['records']} records: {c['removed']} duplicates removed in {c['clusters']} groups, "
                  f"{c['kept']} kept, {c['corrupt']} unreadable ({d.method}, {how})")


# -- publish, train, report -----------------------------------------------------------------------------------------
DatasetOption = Annotated[str, typer.Option(help="The published dataset (processed/<name>).")]
SourceOption = Annotated[str, typer.Option(help="faces or lsun.")]
CategoryOption = Annotated[str, typer.Option(help="LSUN category, for --source lsun.")]


@app.command()
def publish(
    root: RootOption = None,
    dataset: DatasetOption = default(PublishConfig, "dataset"),
    source: SourceOption = default(PublishConfig, "source"),
    category: CategoryOption = default(PublishConfig, "category"),
    size: Annotated[int, typer.Option(min=8, max=1024, help="Published image size.")] = default(PublishConfig, "size"),
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Publish every candidate.")] = False,
    encoding: Annotated[str, typer.Option(help="qoi (lossless, fast), jpeg (smallest), png or raw (fastest)")]
    = default(PublishConfig, "encoding"),
    block: Annotated[int, typer.Option(min=1, max=4096, help="Records per LMDB value (1: readable by "
                                       "format-version-1 readers).")] = default(PublishConfig, "block"),
    split_by_person: Annotated[bool, typer.Option("--split-by-person", help="train/val/test by person (80/10/10): "
                                                  "a person is never on two sides; each record's `split`.")] = False,
    split_seed: Annotated[int, typer.Option()] = default(PublishConfig, "split_seed"),
    force: ForceOption = False,
) -> None:
    """Publish candidates minus duplicates as processed/<dataset>: shards, manifest, card, attribution."""
    config = PublishConfig(dataset=dataset, source=source, category=category, size=size, use_dedup=not no_dedup,
                           encoding=encoding, block=block, split_by_person=split_by_person, split_seed=split_seed)
    r = run("publish", config, root, force)
    console.print(f"publish: {'skipped, ' + r.reason if r.skipped else 'done'}; {r.counts.get('records')} records")


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
    image_size: Annotated[int, typer.Option(help="32, 64 or 128.")] = default(TrainConfig, "image_size"),
    epochs: Annotated[int, typer.Option(min=1)] = default(TrainConfig, "epochs"),
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")]
    = default(TrainConfig, "max_steps"),
    batch_size: Annotated[int, typer.Option(min=2)] = default(TrainConfig, "batch_size"),
    g_width: Annotated[int, typer.Option(help="G channels at 4x4 (the paper: 1024).")]
    = default(TrainConfig, "g_width"),
    d_width: Annotated[int, typer.Option(help="D channels at 4x4 (the paper: 1024).")]
    = default(TrainConfig, "d_width"),
    kernel: Annotated[int, typer.Option(help="4 (pytorch/examples) or 5 (the authors' code).")]
    = default(TrainConfig, "kernel"),
    lr: Annotated[float, typer.Option(min=0)] = default(TrainConfig, "lr"),
    seed: Annotated[int, typer.Option()] = default(TrainConfig, "seed"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = default(TrainConfig, "device"),
    compile: Annotated[bool, typer.Option(help="torch.compile the models.")] = default(TrainConfig, "compile"),
    sample_every: Annotated[int, typer.Option(min=1)] = default(TrainConfig, "sample_every"),
    checkpoint_every: Annotated[int, typer.Option(min=1)] = default(TrainConfig, "checkpoint_every"),
    augment: Annotated[str, typer.Option(help="auto (DiffAugment below --augment-below images), none (the paper's "
                                         "recipe) or diffaug.")] = default(TrainConfig, "augment"),
    augment_policy: Annotated[str, typer.Option(help="DiffAugment's parts: color,translation,cutout.")]
    = default(TrainConfig, "augment_policy"),
    augment_below: Annotated[int, typer.Option(min=0)] = default(TrainConfig, "augment_below"),
    quality: Annotated[str, typer.Option(help="Sample quality: auto (face datasets), faces or none.")]
    = default(TrainConfig, "quality"),
    quality_every: Annotated[int | None, typer.Option(min=1, help="Measure sample quality every N steps "
                                                      "(always at the end).")] = default(TrainConfig, "quality_every"),
    quality_samples: Annotated[int, typer.Option(min=8)] = default(TrainConfig, "quality_samples"),
    resume: Annotated[Path | None, typer.Option(help="A run directory to continue exactly.")] = None,
    force: ForceOption = False, root: RootOption = None,
) -> None:
    """Stage `train-dcgan`: DCGAN on a shard dataset (GPU when there is one; DDP under torchrun)."""
    config = TrainConfig(
        dataset=dataset, image_size=image_size, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        g_width=g_width, d_width=d_width, kernel=kernel, lr=lr, seed=seed, device=device, compile=compile,
        sample_every=sample_every, checkpoint_every=checkpoint_every, augment=augment, augment_policy=augment_policy,
        augment_below=augment_below, quality=quality, quality_every=quality_every, quality_samples=quality_samples,
        resume=resume)
    distributed = _init_distributed()
    try:
        summary = _train(config, root, force, distributed)
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if summary is not None:
        console.print(f"{summary.steps} steps ({summary.epochs_done:.2f} epochs), "
                      f"{summary.images_per_second:.0f} images/s, augmentation {summary.augment}; "
                      f"run: {summary.run_dir}")
        shown = {k: v for k, v in summary.quality.items() if k not in ("space", "step")}
        if shown:
            console.print("sample quality: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        for w in summary.warnings:
            console.print(f"[yellow]warning:[/] {w}")


def _train(config: TrainConfig, root: Path | None, force: bool, distributed: bool) -> Any:
    """Rank 0 (or the only process) runs the stage through the runner; the other DDP ranks train
    beside it without a receipt of their own."""
    import torch.distributed as dist

    if distributed and dist.get_rank() != 0:
        from training import train_stage

        return train_stage(config, root, progress=False, force=force)
    return run("train-dcgan", config, root, force).summary


@app.command()
def report(
    root: RootOption = None,
    dataset: DatasetOption = default(ReportConfig, "dataset"),
    source: SourceOption = default(ReportConfig, "source"),
    category: CategoryOption = default(ReportConfig, "category"),
    samples: Annotated[int, typer.Option(min=0, max=400, help="Kept images shown.")] = default(ReportConfig, "samples"),
    open_: Annotated[bool, typer.Option("--open", help="Open it in the default browser.")] = False,
    force: ForceOption = False,
) -> None:
    """Write the build's self-contained HTML report (processed/<dataset>/report.html) and print its path."""
    config = ReportConfig(dataset=dataset, source=source, category=category, samples=samples)
    r = run("report", config, root, force)
    path = Path(r.counts["report"]).resolve()
    console.print(str(path))
    if open_:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            err.print("no browser could be started here: open the path above yourself")


__all__ = ["BadOption", "http_config", "run"]
