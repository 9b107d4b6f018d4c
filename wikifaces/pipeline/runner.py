"""The stages as one pipeline: which inputs each reads, where its receipt is, and when it can
be skipped. Plain Python: the Prefect flows in `flows/` and the CLI's `build` both run this.

A stage is skipped when its receipt (in `<root>/receipts/<stage>.json`) records the same config
hash and the same input fingerprints, and its outputs are still as it left them. A changed
parameter changes the hash and reruns the stage; if its outputs change, the next stages' inputs
change, and they rerun too. Inside a stage, its own per-item resume does the work.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dedup.config import DedupConfig
from wikifaces.core.files import atomic_write_text
from wikifaces.core.identity import results_hash
from wikifaces.core.paths import DataRoot
from wikifaces.pipeline.receipts import Receipt, fingerprint

log = logging.getLogger("wikifaces.pipeline")

FACES_STAGES = ("names", "images", "detect", "dedup", "publish", "train-dcgan", "report")
LSUN_STAGES = ("lsun-import", "dedup", "publish", "train-dcgan")


@dataclass
class StageResult:
    stage: str
    skipped: bool
    reason: str
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Any, DataRoot, Any, bool], dict[str, Any]]  # (config, root, progress, force) -> counts
    inputs: Callable[[Any, DataRoot], dict[str, Path]]
    outputs: Callable[[Any, DataRoot], dict[str, Path]]

    def hash(self, config: Any, root: DataRoot) -> str:
        """Execution-only fields (workers, HTTP manners) are left out, paths are relative to the root."""
        return results_hash(config, root.root)


# -- the stage wrappers: call the library, return counts ----------------------------------------------------
def _names(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from scraping.names import collect_names

    return collect_names(config, root.root).counts


def _images(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from scraping.images import fetch_images

    return fetch_images(config, root.root, progress=progress, force=force).counts


def _detect(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from faces import detect_faces

    return detect_faces(config, root.root, progress=progress, force=force).counts


def _dedup(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from dedup import find_duplicates

    return find_duplicates(config.dedup, dedup_dataset(config, root), progress=progress, force=force).counts


def _lsun(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from dedup import import_lsun

    return import_lsun(config, root.root, progress=progress, force=force).counts


def _publish(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from wikifaces.publish import publish_dataset

    return publish_dataset(config, root.root)


def _train(config: Any, root: DataRoot, progress: Any, force: bool = False) -> dict[str, Any]:
    """Train; a run that a crash interrupted (same config, same dataset) is resumed from its last
    checkpoint rather than started again, unless `force`. `progress`: a bar (True), or a callable(step, total)."""
    from training import train_dcgan
    from training.train import new_run_dir

    name = Path(config.dataset).name
    pending = root.runs / f"pending-{name}.json"
    key = {"config": STAGES["train-dcgan"].hash(config, root), "dataset": fingerprint(Path(config.dataset))}
    resume = None
    if pending.exists() and not force:
        state = json.loads(pending.read_text())
        run = Path(state["run_dir"])
        if state["key"] == key and (run / "checkpoints" / "latest.pt").exists() and not (run / "summary.json").exists():
            resume = run
            log.info("train-dcgan: resuming the interrupted run %s", run)
    if resume is None:
        run = new_run_dir(Path(config.runs_dir) if config.runs_dir else root.runs, config.desc).resolve()
        atomic_write_text(pending, json.dumps({"key": key, "run_dir": str(run)}))
    s = train_dcgan(config, root.root, resume=resume, progress=progress is True, run_dir=None if resume else run,
                    on_progress=progress if callable(progress) else None)
    # absolute: the same root may be named relatively from another folder next time
    atomic_write_text(root.runs / f"latest-{name}.txt", str(Path(s.run_dir).resolve()) + "\n")
    pending.unlink(missing_ok=True)
    return {"run_dir": str(s.run_dir), "steps": s.steps, "images_per_second": round(s.images_per_second, 2),
            "final": s.final, "warnings": s.warnings, "resumed": resume is not None}


def _report(config: Any, root: DataRoot, progress: bool, force: bool) -> dict[str, Any]:
    from wikifaces.report import build_report

    return build_report(config, root.root)


class DedupStageConfig(BaseModel):
    """The dedup stage of a build: which candidate set, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["faces", "lsun"] = "faces"
    category: str = Field(default="bedroom", pattern=r"^[A-Za-z0-9_.-]+$")
    dedup: DedupConfig = DedupConfig()


def dedup_dataset(config: DedupStageConfig, root: DataRoot) -> Path:
    base = root.candidates(config.source, config.category)
    return base / "shards"


def _latest_run(config: Any, root: DataRoot) -> Path:
    marker = root.runs / f"latest-{Path(config.dataset).name}.txt"
    run = Path(marker.read_text().strip()) if marker.exists() else root.runs / "none"
    return run / "checkpoints" / "latest.pt"


def _takedown(config: Any, root: DataRoot) -> Path:
    return Path(config.takedown_file) if config.takedown_file else root.raw_wikipedia / "takedown.txt"


def _publish_inputs(config: Any, root: DataRoot) -> dict[str, Path]:
    from wikifaces.publish import candidate_paths

    shards, dedup_dir = candidate_paths(config, root)
    return {"candidates": shards, **({"keep": dedup_dir / "keep.npy"} if config.use_dedup else {})}


def _report_inputs(config: Any, root: DataRoot) -> dict[str, Path]:
    """The report shows the whole build: it is stale when the dataset, the dedup result, the
    face table or the latest training run changed."""
    base = root.candidates(config.source, config.category)
    inputs = {"dataset": root.processed(config.dataset), "dedup": base / "dedup" / "summary.json",
              "checkpoint": _latest_run(config, root)}
    if config.source == "faces":
        inputs["faces"] = root.faces / "faces.jsonl"
    return inputs


STAGES: dict[str, Stage] = {
    "names": Stage("names", _names,
                   lambda c, r: {"names_file": Path(c.names_file)} if c.names_file else {},
                   lambda c, r: {"names": r.raw_wikipedia / "names.jsonl"}),
    "images": Stage("images", _images,
                    lambda c, r: {"names": r.raw_wikipedia / "names.jsonl", "takedown": _takedown(c, r)},
                    lambda c, r: {"images": r.raw_wikipedia / "images.jsonl"}),
    "detect": Stage("detect", _detect,
                    lambda c, r: {"images": r.raw_wikipedia / "images.jsonl"},
                    lambda c, r: {"faces": r.faces / "shards", "table": r.faces / "faces.jsonl"}),
    "dedup": Stage("dedup", _dedup,
                   lambda c, r: {"candidates": dedup_dataset(c, r)},
                   lambda c, r: {"keep": dedup_dataset(c, r).parent / "dedup" / "keep.npy"}),
    "lsun-import": Stage("lsun-import", _lsun,
                         lambda c, r: {},
                         lambda c, r: {"shards": r.lsun(c.category) / "shards"}),
    "publish": Stage("publish", _publish, _publish_inputs,
                     lambda c, r: {"dataset": r.processed(c.dataset)}),
    "train-dcgan": Stage("train-dcgan", _train,
                         lambda c, r: {"dataset": Path(c.dataset)},
                         lambda c, r: {"checkpoint": _latest_run(c, r)}),
    "report": Stage("report", _report, _report_inputs,
                    lambda c, r: {"report": r.processed(c.dataset) / "report.html"}),
}


def receipt_path(stage: str, root: DataRoot) -> Path:
    return root.root / "receipts" / f"{stage}.json"


def stage_status(name: str, config: Any, root: DataRoot) -> tuple[bool, str]:
    """(up to date, why) for a stage with this config."""
    stage = STAGES[name]
    receipt = Receipt.read(receipt_path(name, root))
    if receipt is None:
        return False, "never ran"
    if receipt.config_hash != stage.hash(config, root):
        return False, "its parameters changed"
    inputs = {k: fingerprint(p) for k, p in stage.inputs(config, root).items()}
    if receipt.inputs != inputs:
        changed = sorted(k for k in set(inputs) | set(receipt.inputs) if inputs.get(k) != receipt.inputs.get(k))
        return False, f"its inputs changed ({', '.join(changed)})"
    for label, path in stage.outputs(config, root).items():
        if receipt.outputs.get(label) != fingerprint(path) or not fingerprint(path):
            return False, f"its output {label} is missing or was changed"
    return True, f"unchanged since {receipt.finished}"


def run_stage(name: str, config: Any, root: str | Path | DataRoot | None = None, force: bool = False,
              progress: bool = True) -> StageResult:
    """Run one stage unless it is up to date (or `force`); write its receipt."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    stage = STAGES[name]
    current, why = stage_status(name, config, data)
    if current and not force:
        log.info("%s: skipped, %s", name, why)
        receipt = Receipt.read(receipt_path(name, data))
        return StageResult(name, True, why, receipt.counts if receipt else {}, 0.0, receipt.outputs if receipt else {})
    t0 = time.perf_counter()
    counts = stage.run(config, data, progress, force)
    seconds = time.perf_counter() - t0
    outputs = write_receipt(name, config, data, counts)
    return StageResult(name, False, "forced" if force else why, counts, seconds, outputs)


def write_receipt(name: str, config: Any, root: DataRoot, counts: dict[str, Any]) -> dict[str, str]:
    """Record a finished stage: config hash, input and output fingerprints, counts."""
    stage = STAGES[name]
    outputs = {k: fingerprint(p) for k, p in stage.outputs(config, root).items()}
    Receipt(stage=name, config_hash=stage.hash(config, root), config=_jsonable(config),
            inputs={k: fingerprint(p) for k, p in stage.inputs(config, root).items()},
            outputs=outputs, counts=counts).write(receipt_path(name, root))
    return outputs


def _jsonable(config: Any) -> dict[str, Any]:
    return config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)


def select_stages(order: tuple[str, ...], from_stage: str | None = None, only: list[str] | None = None
                  ) -> list[str]:
    """The stages of `order` to run: all, those from `from_stage` on, or exactly `only`."""
    for s in [from_stage, *(only or [])]:
        if s is not None and s not in order:
            raise ValueError(f"unknown stage {s!r}: the stages are {', '.join(order)}")
    if only:
        return [s for s in order if s in only]
    if from_stage:
        return list(order[order.index(from_stage):])
    return list(order)
