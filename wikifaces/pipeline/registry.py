"""The stage registry: every stage's config type, what it reads and writes under the data root,
and how the runner calls it. The one place that knows every stage's contract; the adapters
(CLI, flows) look stages up here and never import their internals.

A stage is a plain function of (config, root) returning a typed summary whose `counts` go into
the receipt. Stages that fan out take an `Executor` too (`wikifaces.core.executor`): the runner
passes the adapter's (local processes, Prefect tasks on threads or Dask) or none (local default).
The configs are imported here, the stage code only when a stage runs: `import flows` stays free
of torch and numba.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dedup.config import DedupStageConfig, LsunImportConfig
from faces.config import DetectConfig, IdentityConfig
from scraping.config import ImagesConfig, NamesConfig
from training.config import TrainConfig
from wikifaces.core.executor import Executor
from wikifaces.core.identity import results_hash
from wikifaces.core.paths import DataRoot
from wikifaces.publish import PublishConfig
from wikifaces.report import ReportConfig

FACES_STAGES = ("names", "images", "detect", "identity", "dedup", "publish", "train-dcgan", "report")
LSUN_STAGES = ("lsun-import", "dedup", "publish", "train-dcgan")


@dataclass
class RunContext:
    """How a stage runs (never what it finds): progress display, force, the fan-out strategy."""

    progress: bool = True
    force: bool = False
    executor: Executor | None = None
    on_progress: Callable[[int, int], None] | None = None  # (done, total), for long single-task stages


@dataclass(frozen=True)
class Stage:
    name: str
    config: type[BaseModel]
    run: Callable[[Any, DataRoot, RunContext], Any]  # -> a summary with `.counts`
    inputs: Callable[[Any, DataRoot], dict[str, Path]]
    outputs: Callable[[Any, DataRoot], dict[str, Path]]
    network: bool = False  # talks to the wiki: adapters retry it on network failure, and never fan it out
    fans_out: bool = False  # takes an executor
    picture: Callable[[Any, DataRoot, Any], Path | None] = field(default=lambda c, r, s: None)

    def hash(self, config: Any, root: DataRoot) -> str:
        """Execution-only fields (workers, HTTP manners) are left out, paths are relative to the root."""
        return results_hash(config, root.root)


# -- how each stage is called ---------------------------------------------------------------------------------
def _names(config: NamesConfig, root: DataRoot, ctx: RunContext) -> Any:
    from scraping.names import collect_names

    return collect_names(config, root.root, progress=ctx.progress, force=ctx.force)


def _images(config: ImagesConfig, root: DataRoot, ctx: RunContext) -> Any:
    from scraping.images import fetch_images

    return fetch_images(config, root.root, progress=ctx.progress, force=ctx.force)


def _detect(config: DetectConfig, root: DataRoot, ctx: RunContext) -> Any:
    from faces import detect_faces

    return detect_faces(config, root, progress=ctx.progress, force=ctx.force, executor=ctx.executor)


def _identity(config: IdentityConfig, root: DataRoot, ctx: RunContext) -> Any:
    from faces.identity import check_identities

    return check_identities(config, root, progress=ctx.progress, force=ctx.force, executor=ctx.executor)


def _dedup(config: DedupStageConfig, root: DataRoot, ctx: RunContext) -> Any:
    from dedup import dedup_candidates

    return dedup_candidates(config, root, progress=ctx.progress, force=ctx.force, executor=ctx.executor)


def _lsun(config: LsunImportConfig, root: DataRoot, ctx: RunContext) -> Any:
    from dedup import import_lsun

    return import_lsun(config, root, progress=ctx.progress, force=ctx.force, executor=ctx.executor)


def _publish(config: PublishConfig, root: DataRoot, ctx: RunContext) -> Any:
    from wikifaces.publish import publish_dataset

    return publish_dataset(config, root, progress=ctx.progress)


def _train(config: TrainConfig, root: DataRoot, ctx: RunContext) -> Any:
    from training import train_stage

    return train_stage(config, root, progress=ctx.progress, force=ctx.force, on_progress=ctx.on_progress,
                       judge=sample_judge(config))


def sample_judge(config: TrainConfig) -> Any:
    """The judge of a run's samples: dlib's face descriptor and our detector for a faces dataset
    (or when asked), none otherwise."""
    if config.quality == "none" or config.channels != 3 or config.dataset is None:
        return None
    if config.quality == "auto":
        from shards import ShardError, read_manifest

        try:
            source = read_manifest(config.dataset).provenance.parameters.get("source")
        except ShardError:  # no dataset there: training itself says so
            return None
        if source != "faces":
            return None
    from faces.judge import FaceJudge

    return FaceJudge()


def _report(config: ReportConfig, root: DataRoot, ctx: RunContext) -> Any:
    from wikifaces.report import build_report

    return build_report(config, root)


# -- what each stage reads and writes ---------------------------------------------------------------------------
def _candidates(config: DedupStageConfig, root: DataRoot) -> Path:
    from dedup.stage import candidate_dataset

    return candidate_dataset(config, root)


def _latest_run(config: Any, root: DataRoot) -> Path:
    marker = root.runs / f"latest-{Path(config.dataset).name}.txt"
    run = Path(marker.read_text().strip()) if marker.exists() else root.runs / "none"
    return run / "checkpoints" / "latest.pt"


def _takedown(config: ImagesConfig, root: DataRoot) -> Path:
    return Path(config.takedown_file) if config.takedown_file else root.raw_wikipedia / "takedown.txt"


def _publish_inputs(config: PublishConfig, root: DataRoot) -> dict[str, Path]:
    from wikifaces.publish import candidate_paths

    shards, dedup_dir = candidate_paths(config, root)
    return {"candidates": shards, **({"keep": dedup_dir / "keep.npy"} if config.use_dedup else {})}


def _report_inputs(config: ReportConfig, root: DataRoot) -> dict[str, Path]:
    """The report shows the whole build: it is stale when the dataset, the dedup result, the
    face table or the latest training run changed."""
    base = root.candidates(config.source, config.category)
    inputs = {"dataset": root.processed(config.dataset), "dedup": base / "dedup" / "summary.json",
              "checkpoint": _latest_run(config, root)}
    if config.source == "faces":
        inputs["faces"] = root.faces / "faces.jsonl"
    return inputs


def _samples(config: TrainConfig, root: DataRoot, summary: Any) -> Path | None:
    samples = sorted((Path(summary.run_dir) / "samples").glob("*.png")) if summary is not None else []
    return samples[-1] if samples else None


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("names", NamesConfig, _names,
          lambda c, r: ({"names_file": Path(c.names_file)} if c.names_file else {})
          | ({"dump": Path(c.dump_file)} if c.dump_file else {}),
          lambda c, r: {"names": r.raw_wikipedia / "names.jsonl"},
          network=True),
    Stage("images", ImagesConfig, _images,
          lambda c, r: {"names": r.raw_wikipedia / "names.jsonl", "takedown": _takedown(c, r)},
          lambda c, r: {"images": r.raw_wikipedia / "images.jsonl"},
          network=True),
    Stage("detect", DetectConfig, _detect,
          lambda c, r: {"images": r.raw_wikipedia / "images.jsonl"},
          lambda c, r: {"faces": r.faces / "shards", "table": r.faces / "faces.jsonl"},
          fans_out=True,
          picture=lambda c, r, s: r.faces / "faces-contact.png"),
    Stage("identity", IdentityConfig, _identity,
          lambda c, r: {"faces": r.faces / "shards", "images": r.raw_wikipedia / "images.jsonl"},
          lambda c, r: {"faces": r.candidates("faces", "") / "shards", "table": r.faces / "identity.jsonl"},
          fans_out=True,
          picture=lambda c, r, s: r.faces / "identity-people.png"),
    Stage("dedup", DedupStageConfig, _dedup,
          lambda c, r: {"candidates": _candidates(c, r)},
          lambda c, r: {"keep": _candidates(c, r).parent / "dedup" / "keep.npy"},
          fans_out=True,
          picture=lambda c, r, s: _candidates(c, r).parent / "dedup" / "gallery.png"),
    Stage("lsun-import", LsunImportConfig, _lsun,
          lambda c, r: {},
          lambda c, r: {"shards": r.lsun(c.category) / "shards"},
          fans_out=True),
    Stage("publish", PublishConfig, _publish, _publish_inputs,
          lambda c, r: {"dataset": r.processed(c.dataset)},
          picture=lambda c, r, s: r.processed(c.dataset) / "README.md"),
    Stage("train-dcgan", TrainConfig, _train,
          lambda c, r: {"dataset": Path(c.dataset)},
          lambda c, r: {"checkpoint": _latest_run(c, r)},
          picture=_samples),
    Stage("report", ReportConfig, _report, _report_inputs,
          lambda c, r: {"report": r.processed(c.dataset) / "report.html"},
          picture=lambda c, r, s: r.processed(c.dataset) / "report.html"),
)}
