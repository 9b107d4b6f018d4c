"""One Prefect flow per stage. Each checks the stage's receipt (skip when unchanged), runs the
library, fans batches out over the task runner where the work is parallel, writes the receipt
and publishes artifacts. No business logic here: that lives in the stage packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import Field

from dedup.config import DedupConfig, LsunImportConfig
from faces.config import DetectConfig
from scraping.config import ImagesConfig, NamesConfig
from training.config import TrainConfig
from wikifaces.core.paths import DataRoot
from wikifaces.pipeline import DedupStageConfig, dedup_dataset
from wikifaces.publish import PublishConfig
from wikifaces.report import ReportConfig

from .common import NETWORK_RETRY_DELAYS, check, done, standin_http, task_runner

DEFAULT_NAMES = NamesConfig(categories=("Living people",), born_after=1900)
BatchSize = Annotated[int, Field(ge=1, le=10_000)]
PartSize = Annotated[int, Field(ge=100, le=1_000_000)]


# -- names and images: network work, retried -----------------------------------------------------------------
@task(retries=3, retry_delay_seconds=NETWORK_RETRY_DELAYS)
def collect_names_task(config: NamesConfig, root: str) -> dict[str, Any]:
    from scraping.names import collect_names

    return collect_names(config, root).counts


@task(retries=3, retry_delay_seconds=NETWORK_RETRY_DELAYS)
def fetch_images_task(config: ImagesConfig, root: str) -> dict[str, Any]:
    """One task on purpose: the client keeps at most 2 downloads in flight and serial API calls
    for the whole stage; spreading downloads over machines would break that promise."""
    from scraping.images import fetch_images

    return fetch_images(config, root, progress=False).counts


def _scrape(stage: str, work: Any, config: NamesConfig | ImagesConfig, root: str | None, force: bool,
            standin: bool, reset: Any = None) -> dict[str, Any]:
    """A scraping stage: against the stand-in when asked, skipped when unchanged, its task retried."""
    data = DataRoot.resolve(root)
    with standin_http(config.http, standin) as http:
        config = config.model_copy(update={"http": http})
        if (decision := check(stage, config, data, force)).skip:
            return decision.result
        if decision.forced and reset is not None:  # once, so that a retried task resumes the forced run
            reset(data.root)
        counts = work(config, str(data.root))
    return done(stage, config, data, counts, decision)


@flow(name="names", log_prints=True)
def names_flow(config: NamesConfig = DEFAULT_NAMES, root: str | None = None, force: bool = False,
               standin: bool = False) -> dict[str, Any]:
    """Stage `names`: people from categories, list pages and names files."""
    return _scrape("names", collect_names_task, config, root, force, standin)


@flow(name="images", log_prints=True)
def images_flow(config: ImagesConfig = ImagesConfig(), root: str | None = None, force: bool = False,
                standin: bool = False) -> dict[str, Any]:
    """Stage `images`: lead images with licences, downloaded politely and checked."""
    from scraping.images import reset_images

    return _scrape("images", fetch_images_task, config, root, force, standin, reset_images)


# -- detect: batches of images fanned out -----------------------------------------------------------------------
@task
def detect_batch_task(batch: list[tuple[str, str]], config: DetectConfig, work: str) -> list[dict[str, Any]]:
    from faces.stage import detect_batch

    return detect_batch(batch, config, work)


@flow(name="detect-batches")
def detect_batches_flow(config: DetectConfig, root: str, batch_size: int = 16) -> int:
    """Map detection over batches of the images still to do; journal each batch as it lands."""
    from faces.stage import batches, journal_results, plan_detection

    data = DataRoot.resolve(root)
    plan = plan_detection(config, data)
    chunks = batches(plan.todo, batch_size)
    if not chunks:
        return 0
    progress = create_progress_artifact(0.0, key="detect-progress", description="detect: images done (%)")
    futures = detect_batch_task.map(chunks, unmapped(config), unmapped(str(plan.work)))
    finished = 0
    for future in futures:
        results = future.result()
        journal_results(data, config, results)
        finished += len(results)
        update_progress_artifact(progress, 100.0 * finished / len(plan.todo))
    return finished


@flow(name="detect", log_prints=True)
def detect_flow(config: DetectConfig = DetectConfig(), root: str | None = None, force: bool = False,
                batch_size: BatchSize = 16, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `detect`: faces found, checked and cropped; batches run on the task runner (threads
    here, or the Dask cluster at `dask_address`)."""
    from faces.stage import finish_detection, plan_detection, reset_detection

    data = DataRoot.resolve(root)
    if (decision := check("detect", config, data, force)).skip:
        return decision.result
    if decision.forced:
        reset_detection(data)
    finished = detect_batches_flow.with_options(task_runner=task_runner(dask_address))(config, str(data.root),
                                                                                      batch_size)
    summary = finish_detection(plan_detection(config, data))
    summary.counts["processed_now"] = finished
    return done("detect", config, data, summary.counts, decision, data.faces / "faces-contact.png")


# -- dedup: hash parts fanned out ----------------------------------------------------------------------------------
@task
def hash_part_task(dataset: str, start: int, stop: int, method: str, path: str) -> str:
    from dedup.hashing import hash_part_file

    return hash_part_file(dataset, start, stop, method, path)


@flow(name="hash-parts")
def hash_parts_flow(dataset: str, out_dir: str, method: str, part_size: int) -> int:
    from dedup.hashing import plan_hashing

    plan = plan_hashing(dataset, out_dir, method, part_size)
    todo = plan.todo
    if todo:
        futures = hash_part_task.map(unmapped(dataset), [plan.spans[k][0] for k in todo],
                                     [plan.spans[k][1] for k in todo], unmapped(method),
                                     [str(plan.names[k]) for k in todo])
        for f in futures:
            f.result()
    return len(todo)


@flow(name="dedup", log_prints=True)
def dedup_flow(config: DedupStageConfig = DedupStageConfig(), root: str | None = None, force: bool = False,
               part_size: BatchSize = 5000, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `dedup`: hashes (parts on the task runner), exact search, clusters, keep list."""
    from dedup.hashing import finish_hashing, plan_hashing
    from dedup.stage import default_out_dir, find_duplicates, hashes_current, reset_hashes, stamp_hashes

    data = DataRoot.resolve(root)
    if (decision := check("dedup", config, data, force)).skip:
        return decision.result
    dataset = dedup_dataset(config, data)
    out = default_out_dir(dataset)
    d: DedupConfig = config.dedup
    if decision.forced:
        reset_hashes(d, out)
    if d.method != "ae" and not hashes_current(d, dataset, out):
        hash_parts_flow.with_options(task_runner=task_runner(dask_address))(str(dataset), str(out), d.method,
                                                                           part_size)
        finish_hashing(plan_hashing(dataset, out, d.method, part_size))
        stamp_hashes(d, dataset, out)
    summary = find_duplicates(d, dataset, out, progress=False)
    return done("dedup", config, data, summary.counts, decision, out / "gallery.png")


# -- LSUN import: parts fanned out ----------------------------------------------------------------------------------
@task
def import_part_task(config: LsunImportConfig, root: str, part: Any) -> int:
    from dedup.importer import import_part

    return import_part(config, root, part)


@flow(name="lsun-import-parts")
def lsun_parts_flow(config: LsunImportConfig, root: str, part_size: int) -> int:
    from dedup.importer import merge_parts, plan_import

    parts = plan_import(config, part_size)
    futures = import_part_task.map(unmapped(config), unmapped(root), parts)
    total = sum(f.result() for f in futures)
    merge_parts(config, root, parts)
    return total


@flow(name="lsun-import", log_prints=True)
def lsun_import_flow(config: LsunImportConfig, root: str | None = None, force: bool = False,
                     part_size: PartSize = 20_000, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `lsun-import`: an LSUN category into shards, in parts on the task runner."""
    from dedup.importer import reset_import

    data = DataRoot.resolve(root)
    if (decision := check("lsun-import", config, data, force)).skip:
        return decision.result
    if decision.forced:
        reset_import(config, data)
    lsun_parts_flow.with_options(task_runner=task_runner(dask_address))(config, str(data.root), part_size)
    import json

    receipt = json.loads((data.lsun(config.category) / "import.receipt.json").read_text())
    return done("lsun-import", config, data, receipt["counts"], decision)


# -- publish, train, report -------------------------------------------------------------------------------------------
@flow(name="publish", log_prints=True)
def publish_flow(config: PublishConfig = PublishConfig(), root: str | None = None, force: bool = False
                 ) -> dict[str, Any]:
    """Stage `publish`: shards, manifest, dataset card and attribution in processed/<dataset>."""
    from wikifaces.publish import publish_dataset

    data = DataRoot.resolve(root)
    if (decision := check("publish", config, data, force)).skip:
        return decision.result
    counts = publish_dataset(config, data.root)
    return done("publish", config, data, counts, decision, data.processed(config.dataset) / "README.md")


@flow(name="train-dcgan", log_prints=True)
def train_flow(config: TrainConfig, root: str | None = None, force: bool = False) -> dict[str, Any]:
    """Stage `train-dcgan` (its own deployment, so that it can run where the GPU is)."""
    from wikifaces.pipeline import STAGES

    data = DataRoot.resolve(root)
    if config.dataset is None:
        raise ValueError("train-dcgan needs config.dataset: a published shard dataset")
    if (decision := check("train-dcgan", config, data, force)).skip:
        return decision.result
    bar = create_progress_artifact(0.0, key="train-progress", description="train-dcgan: steps done (%)")
    counts = STAGES["train-dcgan"].run(config, data,
                                       lambda step, total: update_progress_artifact(bar, 100 * step / total),
                                       decision.forced)
    get_run_logger().info("training run: %s", counts["run_dir"])
    run = Path(counts["run_dir"])
    samples = sorted((run / "samples").glob("*.png"))
    return done("train-dcgan", config, data, counts, decision, samples[-1] if samples else None)


@flow(name="report", log_prints=True)
def report_flow(config: ReportConfig = ReportConfig(), root: str | None = None, force: bool = False) -> dict[str, Any]:
    """Stage `report`: the build's HTML report beside the published dataset."""
    from wikifaces.report import build_report

    data = DataRoot.resolve(root)
    if (decision := check("report", config, data, force)).skip:
        return decision.result
    counts = build_report(config, data.root)
    return done("report", config, data, counts, decision, Path(counts["report"]))


STAGE_FLOWS = {"names": names_flow, "images": images_flow, "detect": detect_flow, "lsun-import": lsun_import_flow,
               "dedup": dedup_flow, "publish": publish_flow, "train-dcgan": train_flow, "report": report_flow}


