"""One Prefect flow per stage, all of one shape: the pipeline's runner runs the stage (skipping
it when its receipt says nothing changed, writing its receipt otherwise); fan-out parts are
Prefect tasks on the flow's task runner (threads here, or the Dask cluster at `dask_address`);
stages that talk to the wiki run as a task retried on failure; and what happened is published
as artifacts. No stage internals here: the stages are looked up in `wikifaces.pipeline.STAGES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from wikifaces.core.paths import DataRoot
from wikifaces.pipeline import STAGES, StageResult, run_stage

from .common import standin_http

# The stages' parameter types, from the registry (the flows know no stage module).
NamesConfig, ImagesConfig = STAGES["names"].config, STAGES["images"].config
DetectConfig, LsunImportConfig = STAGES["detect"].config, STAGES["lsun-import"].config
IdentityConfig = STAGES["identity"].config
TrainConfig, DedupStageConfig = STAGES["train-dcgan"].config, STAGES["dedup"].config
PublishConfig, ReportConfig = STAGES["publish"].config, STAGES["report"].config
DEFAULT_NAMES = NamesConfig(categories=("Living people",), born_after=1900)
BatchSize = Annotated[int, Field(ge=1, le=10_000)]
PartSize = Annotated[int, Field(ge=100, le=1_000_000)]
# Network tasks retry on top of the HTTP client's own retries (those honour Retry-After).
NETWORK_RETRY_DELAYS = [10, 60, 300]


def task_runner(dask_address: str | None) -> Any:
    """Fan-out work goes to an existing Dask cluster when given its address, else to threads here."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1)


@task(cache_policy=NO_CACHE)
def run_part(fn: Callable[..., Any], part: Any, args: tuple[Any, ...]) -> Any:
    """One part of a stage's fan-out (a batch of images, a span of records): a unit of work
    whose result is small (rows, a path), never image bytes."""
    return fn(part, *args)


class PrefectExecutor:
    """The executor (`wikifaces.core.executor`) that maps parts as Prefect tasks on a task runner,
    records each result as it lands and shows the share done as a progress artifact."""

    def __init__(self, stage: str, dask_address: str | None = None) -> None:
        self.stage = stage
        self.dask_address = dask_address

    def map(self, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None]) -> None:
        if not parts:
            return
        bar = create_progress_artifact(0.0, key=f"{self.stage}-progress", description=f"{self.stage}: parts done (%)")
        named = run_part.with_options(name=f"{self.stage}-part")
        with task_runner(self.dask_address) as runner:
            futures = [runner.submit(named, parameters={"fn": fn, "part": p, "args": args}) for p in parts]
            for done, future in enumerate(as_completed(futures), 1):
                on_result(future.result())
                update_progress_artifact(bar, 100.0 * done / len(parts))


@task(retries=3, retry_delay_seconds=NETWORK_RETRY_DELAYS, cache_policy=NO_CACHE)
def run_network_stage(name: str, config: Any, root: str, force: bool) -> StageResult:
    """A stage that talks to the wiki, as one task (the client's politeness holds for the whole
    stage only when one client makes every request). A retry resumes what the failed try did."""
    attempt = TaskRunContext.get().task_run.run_count  # 1 on the first try
    return run_stage(name, config, root, force=force and attempt <= 1, progress=False)


def run_stage_flow(name: str, config: Any, root: str | None, force: bool, dask_address: str | None = None
                   ) -> dict[str, Any]:
    """The body of every stage's flow: run it through the runner, then say what happened."""
    stage, data, logger = STAGES[name], DataRoot.resolve(root), get_run_logger()
    if stage.network:
        result = run_network_stage(name, config, str(data.root), force)
    else:
        executor = PrefectExecutor(name, dask_address) if stage.fans_out else None
        result = run_stage(name, config, data, force=force, progress=False, executor=executor,
                           on_progress=_progress_artifact(name),
                           before=lambda reason: logger.info("%s: running, %s", name, reason))
    _artifacts(result)
    return result.as_dict()


def _progress_artifact(name: str) -> Callable[[int, int], None]:
    """(done, total) -> a progress artifact, created on first use."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "id" not in state:
            state["id"] = create_progress_artifact(0.0, key=f"{name}-progress", description=f"{name}: done (%)")
        update_progress_artifact(state["id"], 100.0 * done / max(1, total))

    return update


def _artifacts(result: StageResult) -> None:
    name, logger = result.stage, get_run_logger()
    if result.skipped:
        logger.info("%s: skipped, %s", name, result.reason)
        create_markdown_artifact(key=f"{name}-summary", markdown=f"**{name}**: skipped, {result.reason}.",
                                 description=f"{name}: skipped")
        return
    rows = [{"what": k, "count": v} for k, v in _flat(result.counts).items()]
    create_table_artifact(key=f"{name}-counts", table=rows, description=f"{name}: counts and reasons")
    lines = [f"## {name}", "", f"Ran because {result.reason}, in {result.seconds:.1f} s.", "",
             *[f"- **{r['what']}**: {r['count']}" for r in rows]]
    create_markdown_artifact(key=f"{name}-summary", markdown="\n".join(lines), description=f"{name}: summary")
    if result.picture is not None:
        create_link_artifact(key=f"{name}-picture", link=Path(result.picture).resolve().as_uri(),
                             link_text=f"{name}: {Path(result.picture).name}", description="a picture to look at")
    logger.info("%s: done, %s", name, ", ".join(f"{r['what']}={r['count']}" for r in rows[:8]))


def _flat(counts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in counts.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


# -- the flows: one per stage, each only its parameters and a call of the shared body ----------------------------
def _scrape(name: str, config: Any, root: str | None, force: bool, standin: bool) -> dict[str, Any]:
    with standin_http(config.http, standin) as http:
        return run_stage_flow(name, config.model_copy(update={"http": http}), root, force)


@flow(name="names", log_prints=True)
def names_flow(config: NamesConfig = DEFAULT_NAMES, root: str | None = None, force: bool = False,
               standin: bool = False) -> dict[str, Any]:
    """Stage `names`: people from categories, list pages and names files, or every human on Wikidata
    with a picture (source wikidata-sparql or wikidata-dump)."""
    return _scrape("names", config, root, force, standin)


@flow(name="images", log_prints=True)
def images_flow(config: ImagesConfig = ImagesConfig(), root: str | None = None, force: bool = False,
                standin: bool = False) -> dict[str, Any]:
    """Stage `images`: lead images with licences, downloaded politely and checked."""
    return _scrape("images", config, root, force, standin)


@flow(name="detect", log_prints=True)
def detect_flow(config: DetectConfig = DetectConfig(), root: str | None = None, force: bool = False,
                batch_size: BatchSize = 16, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `detect`: faces found, checked and cropped; batches run on the task runner (threads
    here, or the Dask cluster at `dask_address`)."""
    return run_stage_flow("detect", config.model_copy(update={"batch_size": batch_size}), root, force, dask_address)


@flow(name="identity", log_prints=True)
def identity_flow(config: IdentityConfig = IdentityConfig(), root: str | None = None, force: bool = False,
                  batch_size: BatchSize = 32, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `identity`: every kept face described (batches on the task runner) and checked to be
    the person it is filed under."""
    return run_stage_flow("identity", config.model_copy(update={"batch_size": batch_size}), root, force,
                          dask_address)


@flow(name="dedup", log_prints=True)
def dedup_flow(config: DedupStageConfig = DedupStageConfig(), root: str | None = None, force: bool = False,
               part_size: BatchSize = 5000, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `dedup`: hashes (parts on the task runner), exact search, clusters, keep list."""
    config = config.model_copy(update={"dedup": config.dedup.model_copy(update={"part_size": part_size})})
    return run_stage_flow("dedup", config, root, force, dask_address)


@flow(name="lsun-import", log_prints=True)
def lsun_import_flow(config: LsunImportConfig, root: str | None = None, force: bool = False,
                     part_size: PartSize = 20_000, dask_address: str | None = None) -> dict[str, Any]:
    """Stage `lsun-import`: an LSUN category into shards, in parts on the task runner."""
    return run_stage_flow("lsun-import", config.model_copy(update={"part_size": part_size}), root, force,
                          dask_address)


@flow(name="publish", log_prints=True)
def publish_flow(config: PublishConfig = PublishConfig(), root: str | None = None, force: bool = False
                 ) -> dict[str, Any]:
    """Stage `publish`: shards, manifest, dataset card and attribution in processed/<dataset>."""
    return run_stage_flow("publish", config, root, force)


@flow(name="train-dcgan", log_prints=True)
def train_flow(config: TrainConfig, root: str | None = None, force: bool = False) -> dict[str, Any]:
    """Stage `train-dcgan` (its own deployment, so that it can run where the GPU is)."""
    return run_stage_flow("train-dcgan", config, root, force)


@flow(name="report", log_prints=True)
def report_flow(config: ReportConfig = ReportConfig(), root: str | None = None, force: bool = False) -> dict[str, Any]:
    """Stage `report`: the build's HTML report beside the published dataset."""
    return run_stage_flow("report", config, root, force)


STAGE_FLOWS = {"names": names_flow, "images": images_flow, "detect": detect_flow, "identity": identity_flow,
               "lsun-import": lsun_import_flow,
               "dedup": dedup_flow, "publish": publish_flow, "train-dcgan": train_flow, "report": report_flow}
