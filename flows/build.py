"""The parent flows: `build-faces` (names -> images -> detect -> identity -> dedup -> publish ->
train-dcgan -> report) and `build-lsun` (lsun-import -> dedup -> publish -> train-dcgan).

Every stage is a subflow that skips itself when its receipt says nothing changed; `from_stage`
and `only` choose stages, `force` reruns them. Training runs through its own deployment when the
build itself runs deployed and `train_deployment` names one (so that it can run on a GPU pool);
otherwise in this process.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, ParameterTypeError
from prefect.runtime import deployment as current_deployment
from pydantic import Field

from dedup.config import DedupConfig
from wikifaces.core.paths import DataRoot
from wikifaces.pipeline import FACES_STAGES, LSUN_STAGES, select_stages
from wikifaces.report import funnel

from .common import building
from .common import standin as standin_urls
from .stages import (
    DEFAULT_NAMES,
    DedupStageConfig,
    DetectConfig,
    IdentityConfig,
    ImagesConfig,
    LsunImportConfig,
    NamesConfig,
    PublishConfig,
    ReportConfig,
    TrainConfig,
    dedup_flow,
    detect_flow,
    identity_flow,
    images_flow,
    lsun_import_flow,
    names_flow,
    publish_flow,
    report_flow,
    task_runner,
    train_flow,
)


def _train(train: TrainConfig, root: str, force: bool, train_deployment: str | None) -> dict[str, Any]:
    """Deployed, the build trains through the training deployment (which may be served on a GPU
    machine); run in-process, or when that deployment does not exist, it trains here."""
    logger = get_run_logger()
    if train_deployment and current_deployment.id:
        try:
            run = run_deployment(name=train_deployment, parameters={"config": train.model_dump(mode="json"),
                                                                    "root": root, "force": force})
        except ObjectNotFound:
            logger.warning("train-dcgan: no deployment %s is served; training in this process", train_deployment)
        else:
            logger.info("train-dcgan: ran as flow run %s of the deployment %s", run.id, train_deployment)
            if not run.state or not run.state.is_completed():
                raise RuntimeError(f"the training deployment {train_deployment} ended {run.state}")
            return {"stage": "train-dcgan", "flow_run": str(run.id), "deployment": train_deployment}
    return train_flow(train, root, force)


LSUN_DEDUP = DedupConfig(verify=False)
STANDIN_NAMES = NamesConfig(categories=("Stand-in people",), category_depth=2)


@flow(name="build-faces", log_prints=True)
def build_faces(
    names: NamesConfig = DEFAULT_NAMES,
    images: ImagesConfig = ImagesConfig(),
    detect: DetectConfig = DetectConfig(),
    identity: IdentityConfig = IdentityConfig(),
    dedup: DedupConfig = DedupConfig(),
    publish: PublishConfig = PublishConfig(),
    train: TrainConfig = TrainConfig(),
    report: ReportConfig = ReportConfig(),
    root: str | None = None,
    from_stage: str | None = None,
    only: list[str] | None = None,
    force: bool = False,
    standin: bool = False,
    standin_people: Annotated[int, Field(ge=12, le=5000)] = 80,
    dask_address: str | None = None,
    train_deployment: str | None = "train-dcgan/default",
) -> list[dict[str, Any]]:
    """Wikipedia portraits to a published face dataset, a trained DCGAN and a report."""
    stages = select_stages(FACES_STAGES, from_stage, only)
    data = DataRoot.resolve(root)
    base = str(data.root)
    publish = publish.model_copy(update={"source": "faces"})
    train = train.model_copy(update={"dataset": data.processed(publish.dataset)})
    report = report.model_copy(update={"dataset": publish.dataset, "source": "faces"})
    results = []
    if standin and names == DEFAULT_NAMES:  # the stand-in has no "Living people": use its own categories
        names = STANDIN_NAMES
    with building(data, "build-faces"), standin_urls(standin, standin_people) as rewrite:
        names = names.model_copy(update={"http": rewrite(names.http)})
        images = images.model_copy(update={"http": rewrite(images.http)})
        for stage in stages:
            if stage == "names":
                results.append(names_flow(names, base, force))
                if (results[-1].get("counts") or {}).get("people") == 0:
                    where = list(names.categories) or ("the given sources" if names.source == "wikipedia"
                                                       else f"{names.source} with these filters")
                    raise ValueError(f"names found nobody in {where}: check the categories or filters (with "
                                     "--standin: its own categories, 'Stand-in people')")
            elif stage == "images":
                results.append(images_flow(images, base, force))
            elif stage == "detect":
                results.append(detect_flow(detect, base, force, dask_address=dask_address))
            elif stage == "identity":
                results.append(identity_flow(identity, base, force, dask_address=dask_address))
            elif stage == "dedup":
                results.append(dedup_flow(DedupStageConfig(source="faces", dedup=dedup), base, force,
                                          dask_address=dask_address))
            elif stage == "publish":
                results.append(publish_flow(publish, base, force))
            elif stage == "train-dcgan":
                results.append(_train(train, base, force, train_deployment))
            elif stage == "report":
                results.append(report_flow(report, base, force))
    _funnel_artifact(data, report)
    return results


@flow(name="build-lsun", log_prints=True)
def build_lsun(
    lsun: LsunImportConfig,
    # hash alone: verifying the closest 2M of LSUN's ~19M candidate pairs adds ~55 min on 2 cores (README)
    dedup: DedupConfig = LSUN_DEDUP,
    publish: PublishConfig = PublishConfig(dataset="lsun-bedroom-64", source="lsun"),
    train: TrainConfig = TrainConfig(),
    root: str | None = None,
    from_stage: str | None = None,
    only: list[str] | None = None,
    force: bool = False,
    dask_address: str | None = None,
    train_deployment: str | None = "train-dcgan/default",
) -> list[dict[str, Any]]:
    """An LSUN category to a deduplicated published dataset and a trained DCGAN."""
    stages = select_stages(LSUN_STAGES, from_stage, only)
    data = DataRoot.resolve(root)
    base = str(data.root)
    publish = publish.model_copy(update={"source": "lsun", "category": lsun.category})
    train = train.model_copy(update={"dataset": data.processed(publish.dataset)})
    results = []
    with building(data, "build-lsun"):
        for stage in stages:
            if stage == "lsun-import":
                results.append(lsun_import_flow(lsun, base, force, dask_address=dask_address))
            elif stage == "dedup":
                results.append(dedup_flow(DedupStageConfig(source="lsun", category=lsun.category, dedup=dedup),
                                          base, force, dask_address=dask_address))
            elif stage == "publish":
                results.append(publish_flow(publish, base, force))
            elif stage == "train-dcgan":
                results.append(_train(train, base, force, train_deployment))
    _funnel_artifact(data, ReportConfig(dataset=publish.dataset, source="lsun", category=lsun.category))
    return results


def _funnel_artifact(data: DataRoot, report: ReportConfig) -> None:
    """The build's funnel as one table, each row in its unit: titles -> people -> lead images ->
    images with a face; faces detected -> kept -> after dedup -> published."""
    try:
        steps = funnel(data, report)
    except FileNotFoundError:
        return
    rows = [{"section": s["section"], "step": s["step"], "count": s["count"], "unit": s["unit"],
             "lost": "" if s["lost"] is None else f"{s['lost']:.1%}",
             "why": ", ".join(f"{k}: {v}" for k, v in s["reasons"].items() if v)} for s in steps]
    create_table_artifact(key="build-funnel", table=rows, description="the build's funnel")


__all__ = ["ParameterTypeError", "build_faces", "build_lsun", "task_runner"]
